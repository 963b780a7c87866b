"""How a sequence lives within `num_ctx`: prompt truncation and context shifting, as Ollama does.

A prompt longer than the context keeps its first `num_keep` tokens and its newest ones, leaving
room to generate. A sequence that fills the context while generating drops the oldest half of
what follows `num_keep` from its KV cache and carries on (a context shift), so generation runs
until `num_predict` (capped at 10 x num_ctx when unlimited, as Ollama caps it) or a stop.
"""

from __future__ import annotations

from dataclasses import dataclass

# num_predict -1 (any negative, and 0): unlimited, but bounded so that a model that never emits EOS
# cannot run forever, as Ollama bounds it (llm/llama_server.go boundedNumPredict; its 0 is left
# out of the request, which llama-server then takes as unlimited).
OPEN_ENDED_LIMIT = 10  # x num_ctx


@dataclass(frozen=True)
class Window:
    num_ctx: int
    keep: int  # tokens at the start that are never dropped
    discard: int  # tokens dropped after `keep` by one shift

    @classmethod
    def of(cls, num_ctx: int, num_keep: int, prompt_len: int, bos: bool = False) -> "Window":
        """`bos`: the tokenizer put a BOS first, which `num_keep` does not count (as Ollama and
        llama-server keep num_keep + 1 then)."""
        keep = prompt_len if num_keep < 0 else num_keep + bos
        keep = max(0, min(keep, num_ctx - 1))  # at least one token can always be dropped
        return cls(num_ctx, keep, max((num_ctx - keep) // 2, 1))

    def fit_prompt(self, tokens: list[int]) -> list[int]:
        """The prompt with room to generate: first `keep` tokens and the newest ones."""
        if len(tokens) < self.num_ctx:
            return tokens
        room = self.num_ctx - self.discard
        head = max(0, min(self.keep, room - 1))  # the newest token always stays
        return tokens[:head] + tokens[len(tokens) - max(room - head, 1):]


def predict_limit(num_predict: int, num_ctx: int) -> int:
    """How many tokens a sequence may generate at most."""
    if num_predict <= 0 or num_predict > OPEN_ENDED_LIMIT * num_ctx:
        return OPEN_ENDED_LIMIT * num_ctx
    return num_predict

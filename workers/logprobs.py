"""A sampled token's log-probability, as OpenAI defines it and llama-server reports it: the
log-softmax of the model's raw logits over the whole vocabulary, before penalties, temperature,
top-k/p and grammar; and the most likely tokens beside it.

Only sequences that ask pay for it: one pass of numpy over the logits row (a max, an exp-sum
and, for the top ones, a partial sort), no copy of the vocabulary into Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from workers.protocol import Logprob, TokenLogprob

MAX_TOP_LOGPROBS = 20  # OpenAI's and Ollama's bound


@dataclass(frozen=True)
class Distribution:
    """What a logits row says, measured before the token is known."""

    logits: np.ndarray  # the row itself (a view: read before the next decode, or a copy)
    log_norm: float  # log of the softmax's denominator
    top: list[int]  # the most likely token ids, most likely first

    @classmethod
    def of(cls, logits: np.ndarray, top: int) -> Distribution:
        peak = float(logits.max())
        log_norm = peak + float(np.log(np.exp(logits - peak, dtype=np.float64).sum()))
        ids: list[int] = []
        if top:
            best = np.argpartition(logits, -top)[-top:]
            ids = best[np.argsort(logits[best])[::-1]].tolist()
        return cls(logits, log_norm, ids)

    def logprob(self, token: int) -> float:
        return float(self.logits[token]) - self.log_norm

    def entry(self, token: int, piece: Callable[[int], bytes]) -> Logprob:
        """The entry of the sampled `token`, with the top ones if any were measured."""
        entry: Logprob = {**_token(token, self.logprob(token), piece)}  # type: ignore[typeddict-item]
        if self.top:
            entry["top_logprobs"] = [_token(t, self.logprob(t), piece) for t in self.top]
        return entry


def _token(token: int, logprob: float, piece: Callable[[int], bytes]) -> TokenLogprob:
    data = piece(token)
    return {"token": data.decode(errors="replace"), "logprob": logprob, "bytes": list(data)}

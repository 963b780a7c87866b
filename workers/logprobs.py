"""A sampled token's log-probability, as OpenAI defines it and llama-server reports it: the
log-softmax of the model's raw logits over the whole vocabulary, before penalties, temperature,
top-k/p and grammar; and the most likely tokens beside it.

Only sequences that ask pay for it: a few passes of numpy over the logits row (a max, an
exp-sum, and for the top ones a comparison and a sort of the few near the peak), no copy of the
vocabulary into Python: ~0.6 ms a token for Gemma's 262k vocabulary on this CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from workers.protocol import Logprob, TokenLogprob

MAX_TOP_LOGPROBS = 20  # OpenAI's and Ollama's bound
TOP_MARGIN = 30.0  # logits this far below the peak are e^-30 as likely: never among the top


@dataclass(frozen=True)
class Distribution:
    """What a logits row says, measured before the token is known."""

    logits: np.ndarray  # the row itself (a view: read before the next decode, or a copy)
    log_norm: float  # log of the softmax's denominator
    top: list[int]  # the most likely token ids, most likely first

    @classmethod
    def of(cls, logits: np.ndarray, top: int) -> Distribution:
        peak = float(logits.max())
        # exp in float32, in place, summed in float64: 3x faster than exp in float64 over a
        # 262k vocabulary, and each term is in (0, 1], so nothing is lost that a logprob shows.
        shifted = logits - peak
        np.exp(shifted, out=shifted)
        log_norm = peak + float(np.log(shifted.sum(dtype=np.float64)))
        ids: list[int] = []
        if top:
            # The top ones sit near the peak: partition only those within TOP_MARGIN of it
            # (a few hundred, not the vocabulary), unless fewer than asked are there.
            near = np.flatnonzero(logits >= peak - TOP_MARGIN)
            if len(near) < top:
                near = np.arange(len(logits))
            best = near[np.argpartition(logits[near], -top)[-top:]]
            # Most likely first; on a tie the lower id, as a greedy argmax picks it.
            ids = best[np.lexsort((best, -logits[best]))].tolist()
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

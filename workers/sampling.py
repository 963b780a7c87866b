"""Per-sequence llama.cpp sampler chains built from request options.

Top-k runs before the repetition penalties (llama.cpp warns that penalties over a whole vocabulary
are slow: Gemma has 262k tokens), then typical-p, top-p, min-p, temperature and a seeded draw. Temperature
<= 0 means greedy, as in Ollama; there the penalties see the whole vocabulary so that they can
still change the choice. Structured output adds a grammar beside the chain (grammar.py).

A greedy chain's choice is made here in numpy rather than by `llama_sampler_sample`, which first
copies the whole vocabulary's logits into a candidate array: ~0.4 ms a token for Gemma's 262k on
a CPU (measured), paid by every sequence in every step, where an argmax is ~25 µs. The choice is
the chain's own, token for token: the first highest logit after llama.cpp's penalties, in
float32 as its C code computes them (tests/unit/test_sampling.py holds the two side by side);
and the chain still accepts every token, so its state stays what llama.cpp's would be.
"""

from __future__ import annotations

from collections import Counter, deque
from typing import TYPE_CHECKING

import llama_cpp as llama
import numpy as np

from workers.options import RequestOptions

if TYPE_CHECKING:
    from workers.llm import LoadedModel


class Penalties:
    """llama.cpp's repetition penalties over the last `last_n` tokens accepted, in numpy."""

    def __init__(self, last_n: int, repeat: float, frequency: float, presence: float) -> None:
        self._window: deque[int] = deque(maxlen=last_n)
        self._counts: Counter[int] = Counter()
        # As C stores them: floats. C's `count * freq + present` may round once (a fused
        # multiply-add) where numpy rounds twice; with one of the two 0 both give the same.
        self._repeat = np.float32(repeat)
        self._frequency, self._presence = np.float32(frequency), np.float32(presence)

    @staticmethod
    def exact(frequency: float, presence: float) -> bool:
        """Whether numpy gives C's numbers for these penalties (see above)."""
        return frequency == 0 or presence == 0

    def accept(self, token: int) -> None:
        window = self._window
        if len(window) == window.maxlen:
            oldest = window[0]
            self._counts[oldest] -= 1
            if not self._counts[oldest]:
                del self._counts[oldest]
        window.append(token)
        self._counts[token] += 1

    def apply(self, logits: np.ndarray) -> np.ndarray:
        """A copy of the logits with the window's tokens penalized."""
        if not self._counts:
            return logits
        ids = np.fromiter(self._counts.keys(), np.int64, len(self._counts))
        counts = np.fromiter(self._counts.values(), np.float32, len(self._counts))
        row = logits.copy()
        penalized = row[ids]
        penalized = np.where(penalized <= 0, penalized * self._repeat, penalized / self._repeat)
        row[ids] = penalized - (counts * self._frequency + self._presence)
        return row


class Chain:
    """A sequence's sampler chain: llama.cpp's (`handle`), with greedy choices made in numpy."""

    def __init__(self, opts: RequestOptions, n_ctx: int, n_vocab: int,
                 history: list[int]) -> None:
        self.handle = llama.llama_sampler_chain_init(llama.llama_sampler_chain_default_params())
        last_n = n_ctx if opts["repeat_last_n"] < 0 else opts["repeat_last_n"]
        frequency, presence = opts["frequency_penalty"], opts["presence_penalty"]
        penalize = last_n > 0 and (opts["repeat_penalty"] != 1.0 or frequency != 0
                                   or presence != 0)
        greedy = opts["temperature"] <= 0
        self._greedy = greedy and (not penalize or Penalties.exact(frequency, presence))
        self._penalties = (Penalties(last_n, opts["repeat_penalty"], frequency, presence)
                           if self._greedy and penalize else None)

        def add(sampler: llama.llama_sampler_p) -> None:
            llama.llama_sampler_chain_add(self.handle, sampler)

        def add_penalties() -> None:
            if penalize:
                add(llama.llama_sampler_init_penalties(n_vocab, last_n, opts["repeat_penalty"],
                                                       frequency, presence))

        if greedy:
            add_penalties()
            add(llama.llama_sampler_init_greedy())
        else:
            if opts["top_k"] > 0:
                add(llama.llama_sampler_init_top_k(opts["top_k"]))
            add_penalties()
            if 0 < opts["typical_p"] < 1:
                add(llama.llama_sampler_init_typical(opts["typical_p"], 1))
            if 0 < opts["top_p"] < 1:
                add(llama.llama_sampler_init_top_p(opts["top_p"], 1))
            if opts["min_p"] > 0:
                add(llama.llama_sampler_init_min_p(opts["min_p"], 1))
            add(llama.llama_sampler_init_temp(opts["temperature"]))
            seed = llama.LLAMA_DEFAULT_SEED if opts["seed"] < 0 else opts["seed"] & 0xFFFFFFFF
            add(llama.llama_sampler_init_dist(seed))
        # Penalties look back over the prompt too, as llama.cpp's server does.
        if penalize:
            for token in history[-last_n:]:
                self.accept(token)

    def sample(self, model: LoadedModel, index: int) -> int:
        """The chain's token for batch output `index`, accepted."""
        if not self._greedy:
            return llama.llama_sampler_sample(self.handle, model.ctx, index)
        logits = model.logits(index)
        if self._penalties is not None:
            logits = self._penalties.apply(logits)
        token = int(logits.argmax())  # the first of equal maxima, as llama.cpp's greedy takes
        self.accept(token)
        return token

    def accept(self, token: int) -> None:
        """A token chosen outside `sample` (by the grammar's pass) that the chain must count."""
        llama.llama_sampler_accept(self.handle, token)
        if self._penalties is not None:
            self._penalties.accept(token)

    def free(self) -> None:
        llama.llama_sampler_free(self.handle)

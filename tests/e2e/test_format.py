"""Structured output: `format` as "json" or a JSON schema constrains generation by a grammar."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from jsonschema import Draft202012Validator

from tests.e2e.conftest import MODEL
from tests.e2e.server import Server

PERSON = {"type": "object",
          "properties": {"name": {"type": "string", "maxLength": 12},
                         "age": {"type": "integer", "minimum": 0, "maximum": 150},
                         "likes_tea": {"type": "boolean"}},
          "required": ["name", "age", "likes_tea"]}


def _generate(server: Server, output_format: object, seed: int, **extra: object) -> dict:
    # A sampled answer under a schema gets room for the longest one the grammar allows (a string
    # character may be a 6-token \u escape), so it never ends cut and unparsable by chance.
    limit = 80 if output_format is None else 250
    reply = server.post("/api/generate", {
        "model": MODEL, "prompt": "Describe a person as JSON.", "stream": False,
        "format": output_format,
        "options": {"seed": seed, "temperature": 1.0, "num_predict": limit}, **extra})
    assert reply.status == 200, reply.body
    return reply.json()


# Every kind the converter writes: nested objects, arrays, bounded strings, integers in a range,
# numbers, an enum, an optional property.
RECORD = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 20},
    "age": {"type": "integer", "minimum": 0, "maximum": 120},
    "height": {"type": "number"},
    "role": {"enum": ["admin", "user", "guest"]},
    "tags": {"type": "array", "items": {"type": "string", "maxLength": 10}, "maxItems": 3},
    "address": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 20},
        "zip": {"type": "integer", "minimum": 0, "maximum": 99999}},
        "required": ["city", "zip"]},
    "nickname": {"type": "string", "maxLength": 12}},
    "required": ["name", "age", "height", "role", "tags", "address"]}


def test_fifty_seeded_answers_at_temperature_one_are_strict_json_valid_for_the_schema(
        server: Server) -> None:
    def answer(seed: int) -> dict:
        reply = server.post("/api/generate", {
            "model": MODEL, "prompt": "Describe a person as JSON.", "stream": False,
            "format": RECORD, "options": {"seed": seed, "temperature": 1.0, "num_predict": 1500}})
        assert reply.status == 200, reply.body
        return reply.json()

    validator = Draft202012Validator(RECORD)
    with ThreadPoolExecutor(8) as pool:
        bodies = list(pool.map(answer, range(50)))
    for seed, body in enumerate(bodies):
        assert body["done_reason"] == "stop", (seed, body["response"])
        # Strict JSON: no raw control characters in strings, no NaN (json.loads allows these).
        record = json.loads(body["response"], strict=True,
                            parse_constant=lambda c: pytest.fail(f"{c} in {body['response']}"))
        validator.validate(record)


def test_format_json_returns_parseable_json(server: Server) -> None:
    reply = server.post("/api/generate", {
        "model": MODEL, "prompt": "What is 2+2? Answer as JSON with the key result.",
        "stream": False,
        # Greedy without a repeat penalty (Ollama's default since 0.32.10), this small model
        # nests {"model": {...}} until the limit; the penalty lets it answer and close.
        "format": "json", "options": {"temperature": 0, "num_predict": 300,
                                      "repeat_penalty": 1.1}})
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

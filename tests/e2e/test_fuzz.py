"""A bounded fuzz run of the request schemas against the live server (hypothesis).

Bodies mix valid fields with wrong types, huge numbers, unknown options, broken templates and
odd names. Whatever comes in, the server answers with a status below 500 in time, and a normal
request still gets its answer afterwards (no slot leaked, no worker wedged).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.e2e.conftest import MODEL, QUICK
from tests.e2e.server import Server
from workers.options import LOAD, OPTIONS

FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

# What JSON clients send, and what only a hostile one does: numbers past any machine type.
huge = st.sampled_from([10**400, -(10**400), 1e308, "1" + "0" * 400, "9" * 5000 + "h"])
scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
           | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12) | huge)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=6)
# Load options would reload the model on every example; the range checks are the same code.
option_names = st.sampled_from([o.name for o in OPTIONS if o.group != LOAD] + ["bogus"])
templates = st.sampled_from(["{{ .Prompt }}", "{{ range .Messages }}{{ .Content }}{{ end }}",
                             "{{ if .Prompt }}", "{{ index .Messages 9 }}", "{{range 100000000}}{{end}}",
                             "{{ json .Prompt }}", "{{ .Nope.Deeper }}"]) | st.text(max_size=20)
names = st.sampled_from([MODEL, "nope:1", "a/b/c/d", "x\n", "../etc", "fuzzed:1"]) | st.text(max_size=16)
messages = st.lists(st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "tool", "wizard"]) | values},
    optional={"content": st.text(max_size=30) | values, "images": values}), max_size=4)


def _options() -> st.SearchStrategy[Any]:
    # Generation is capped so that every example is quick (an absent num_predict means up to
    # 10 x num_ctx tokens); everything else is fuzzed, and options of a wrong type are a 400.
    return st.dictionaries(option_names, values, max_size=4).map(
        lambda o: {**o, "num_predict": 4}) | values.filter(
        lambda v: v is not None and not isinstance(v, dict))


def _ok(reply_status: int, body: Any) -> None:
    assert reply_status < 500, (reply_status, body)


@FUZZ
@given(body=st.fixed_dictionaries({"model": st.just(MODEL), "options": _options()}, optional={
    "prompt": st.text(max_size=40) | values, "template": templates,
    "context": st.lists(st.integers(-3, 2**64 - 1), max_size=3) | values, "raw": values,
    "system": values, "keep_alive": values, "stream": st.booleans(), "format": values,
    "suffix": values}))
def test_generate_never_fails_with_a_5xx(server: Server, body: dict) -> None:
    reply = server.post("/api/generate", body, timeout=60)
    _ok(reply.status, body)


@FUZZ
@given(body=st.fixed_dictionaries({"model": st.just(MODEL), "messages": messages,
                                   "options": _options()},
                                  optional={"stream": st.booleans(), "tools": values,
                                            "think": values}))
def test_chat_never_fails_with_a_5xx(server: Server, body: dict) -> None:
    reply = server.post("/api/chat", body, timeout=60)
    _ok(reply.status, body)


@FUZZ
@given(body=st.fixed_dictionaries({"model": names}, optional={
    "input": st.text(max_size=40) | values, "truncate": values, "dimensions": values,
    "options": _options()}))
def test_embed_never_fails_with_a_5xx(server: Server, body: dict) -> None:
    reply = server.post("/api/embed", body, timeout=60)
    _ok(reply.status, body)


@FUZZ
@given(source=names, destination=names)
def test_copy_never_fails_with_a_5xx(server: Server, source: Any, destination: Any) -> None:
    reply = server.post("/api/copy", {"source": source, "destination": destination}, timeout=60)
    _ok(reply.status, (source, destination))


@FUZZ
@given(body=st.fixed_dictionaries({"model": names}, optional={
    "from": names | values, "files": values, "template": templates, "system": values,
    "parameters": st.dictionaries(option_names, values, max_size=3) | values,
    "license": values, "messages": messages | values, "stream": st.booleans()}))
def test_create_never_fails_with_a_5xx(server: Server, body: dict) -> None:
    reply = server.post("/api/create", body, timeout=60)
    _ok(reply.status, body)


@pytest.mark.parametrize("path", ["/api/show", "/api/delete"])
@FUZZ
@given(model=names | values)
def test_show_and_delete_never_fail_with_a_5xx(server: Server, path: str, model: Any) -> None:
    if model == MODEL:
        return  # the suite's model stays
    method = "DELETE" if path == "/api/delete" else "POST"
    reply = server.request(method, path, {"model": model}, timeout=60)
    _ok(reply.status, model)


# ---- /v1: OpenAI's fields, each of every type --------------------------------------------------

not_a_length = values.filter(lambda v: not (isinstance(v, int) and not isinstance(v, bool) and v > 0))
parts = st.lists(st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image_url", "input_audio"]) | values},
    optional={"text": st.text(max_size=10) | values, "image_url": values}), max_size=3)
v1_messages = st.lists(st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "developer", "tool"]) | values},
    optional={"content": st.text(max_size=30) | parts | values,
              "tool_calls": values | st.lists(st.fixed_dictionaries({"function": values}),
                                              max_size=2),
              "tool_call_id": values, "name": values}), max_size=4)
response_formats = values | st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "json_object", "json_schema"]) | values},
    optional={"json_schema": values | st.fixed_dictionaries({}, optional={
        "schema": values, "name": values})})
sampling = {"max_completion_tokens": not_a_length, "temperature": values, "top_p": values,
            "seed": values, "stop": values, "frequency_penalty": values,
            "presence_penalty": values, "n": values, "stream": st.booleans(),
            "stream_options": values, "response_format": response_formats, "keep_alive": values}


@FUZZ
@given(body=st.fixed_dictionaries({"model": st.just(MODEL), "messages": v1_messages,
                                   "max_tokens": st.just(4)},
                                  optional={**sampling, "tools": values, "tool_choice": values}))
def test_v1_chat_never_fails_with_a_5xx(server: Server, body: dict) -> None:
    reply = server.post("/v1/chat/completions", body, timeout=60)
    _ok(reply.status, body)


@FUZZ
@given(body=st.fixed_dictionaries({"model": st.just(MODEL), "max_tokens": st.just(4)},
                                  optional={**sampling, "prompt": st.text(max_size=30) | values,
                                            "suffix": values, "echo": values}))
def test_v1_completions_never_fail_with_a_5xx(server: Server, body: dict) -> None:
    reply = server.post("/v1/completions", body, timeout=60)
    _ok(reply.status, body)


@FUZZ
@given(body=st.fixed_dictionaries({"model": names}, optional={
    "input": st.text(max_size=30) | st.lists(st.integers(-3, 2**40), max_size=4) | values,
    "encoding_format": values, "dimensions": values}))
def test_v1_embeddings_never_fail_with_a_5xx(server: Server, body: dict) -> None:
    reply = server.post("/v1/embeddings", body, timeout=60)
    _ok(reply.status, body)


def test_the_model_still_answers_after_the_fuzzing(server: Server) -> None:
    replies = [server.post("/api/generate", {"model": MODEL, "prompt": "hi", "stream": False,
                                             "options": QUICK}) for _ in range(5)]
    assert all(r.status == 200 and r.json()["done"] for r in replies)

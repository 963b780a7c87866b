"""Bad input gets a clear {"error": ...} with the right status, and the server stays healthy."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import MODEL, QUICK
from tests.e2e.server import Server


@pytest.mark.parametrize("path", ["/api/generate", "/api/chat", "/api/embed", "/api/show",
                                  "/api/create"])
def test_malformed_json_is_400(server: Server, path: str) -> None:
    reply = server.post(path, raw=b'{"model": "gemma3:270m",')
    assert reply.status == 400
    assert "invalid JSON" in reply.json()["error"]


def test_missing_model_is_400_model_is_required_for_chat(server: Server) -> None:
    reply = server.post("/api/chat", {"messages": []})
    assert reply.status == 400
    assert reply.json() == {"error": "model is required"}


@pytest.mark.parametrize("path", ["/api/generate", "/api/embed"])
def test_missing_model_is_an_unknown_one_for_generate_and_embed(server: Server,
                                                               path: str) -> None:
    reply = server.post(path, {"prompt": "hi"})  # as Ollama's handlers (routes_generate_test.go)
    assert reply.status == 404
    assert reply.json() == {"error": "model '' not found"}


# The least body of each route: the model and what it takes as input.
ASKS = {"/api/generate": {"prompt": "hi"}, "/api/chat": {"messages": [{"role": "user",
                                                                      "content": "hi"}]},
        "/api/embed": {"input": "hi"}, "/api/embeddings": {"prompt": "hi"}}


# Each route's words, as Ollama's handlers write them (routes.go; embed's handleScheduleError).
UNKNOWN = {"/api/generate": "model 'nope:1b' not found", "/api/chat": "model 'nope:1b' not found",
           "/api/embed": 'model "nope:1b" not found, try pulling it first',
           "/api/embeddings": 'model "nope:1b" not found, try pulling it first'}


@pytest.mark.parametrize("path", list(UNKNOWN))
def test_unknown_model_is_404_with_ollamas_message(server: Server, path: str) -> None:
    reply = server.post(path, {"model": "nope:1b", **ASKS[path]})
    assert reply.status == 404
    assert reply.json() == {"error": UNKNOWN[path]}


@pytest.mark.parametrize("path", list(ASKS))
def test_a_field_corral_does_not_implement_is_400_naming_it(server: Server, path: str) -> None:
    reply = server.post(path, {"model": MODEL, **ASKS[path], "_debug_render_only": True})
    assert reply.status == 400
    assert reply.json() == {"error": '"_debug_render_only" is not supported'}


def test_a_message_field_ollama_does_not_have_is_400_naming_it(server: Server) -> None:
    reply = server.post("/api/chat", {"model": MODEL, "messages": [
        {"role": "user", "content": "hi", "name": "bob"}]})
    assert reply.status == 400
    assert reply.json() == {"error": '"messages[0].name" is not supported'}


def test_a_null_field_counts_as_absent(server: Server) -> None:
    reply = server.post("/api/generate", {"model": MODEL, "prompt": "hi", "stream": False,
                                          "options": QUICK, "_debug_render_only": None})
    assert reply.status == 200, reply.body


def test_wrong_option_type_is_400_naming_the_option(server: Server) -> None:
    reply = server.post("/api/generate", {"model": MODEL, "prompt": "hi",
                                          "options": {"temperature": "hot"}})
    assert reply.status == 400
    assert "temperature" in reply.json()["error"]


def test_unknown_option_is_400(server: Server) -> None:
    reply = server.post("/api/generate", {"model": MODEL, "prompt": "hi",
                                          "options": {"temprature": 0.5}})
    assert reply.status == 400
    assert reply.json() == {"error": 'invalid option "temprature"'}


def test_invalid_keep_alive_is_400(server: Server) -> None:
    reply = server.post("/api/generate", {"model": MODEL, "prompt": "hi", "keep_alive": "soon"})
    assert reply.status == 400 and "keep_alive" in reply.json()["error"]


def test_a_chat_role_that_is_not_a_string_is_400(server: Server) -> None:
    reply = server.post("/api/chat", {"model": MODEL,
                                      "messages": [{"role": 7, "content": "hi"}]})
    assert reply.status == 400 and reply.json()["error"] == "messages[0].role must be a string"


def test_invalid_template_override_is_400(server: Server) -> None:
    reply = server.post("/api/generate", {"model": MODEL, "prompt": "hi",
                                          "template": "{{ if .Prompt }}"})
    assert reply.status == 400 and "template" in reply.json()["error"]


def test_unknown_route_is_404_json(server: Server) -> None:
    reply = server.post("/api/nothing", {})
    assert reply.status == 404 and "error" in reply.json()


def test_server_still_answers_after_bad_requests(server: Server) -> None:
    for raw in (b"", b"[]", b"null", b'{"model": 5}', b"\xff\xfe"):
        assert server.post("/api/generate", raw=raw).status == 400
    reply = server.post("/api/generate", {"model": MODEL, "prompt": "hi", "stream": False,
                                          "options": QUICK})
    assert reply.status == 200 and reply.json()["done"] is True


def test_template_that_fails_while_rendering_is_400_not_a_crash(server: Server) -> None:
    reply = server.post("/api/generate", {"model": MODEL, "prompt": "hi",
                                          "template": "{{ index .Messages 5 }}"})
    assert reply.status == 400
    assert "index out of range" in reply.json()["error"]
    assert server.post("/api/generate", {"model": MODEL, "prompt": "hi", "stream": False,
                                         "options": QUICK}).status == 200


@pytest.mark.parametrize(("method", "path", "body", "error"), [
    ("POST", "/api/generate", {"model": "a/b/c/d", "prompt": "hi"}, "invalid model name"),
    ("POST", "/api/copy", {"source": MODEL, "destination": "bad name"},
     'destination "bad name" is invalid'),
    ("POST", "/api/copy", {"source": "", "destination": "x"}, 'source "" is invalid'),
    ("DELETE", "/api/delete", {"model": "bad name"}, 'name "bad name" is invalid'),
])
def test_an_invalid_model_name_is_400_in_each_routes_ollama_words(
        server: Server, method: str, path: str, body: dict, error: str) -> None:
    reply = server.request(method, path, body)
    assert reply.status == 400 and reply.json() == {"error": error}

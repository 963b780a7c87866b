"""POST /api/embed and the legacy POST /api/embeddings."""

from __future__ import annotations

import math

from tests.e2e.conftest import MODEL
from tests.e2e.server import Server


def embed(server: Server, **body):  # type: ignore[no-untyped-def]
    reply = server.post("/api/embed", {"model": MODEL, **body})
    assert reply.status == 200, reply.body
    return reply.json()


def norm(v: list[float]) -> float:
    return math.sqrt(sum(x * x for x in v))


def test_single_string_gives_one_normalized_vector(server: Server) -> None:
    body = embed(server, input="Why is the sky blue?")
    assert body["model"] == MODEL
    [vector] = body["embeddings"]
    assert len(vector) == 640  # Gemma 3 270M's embedding size
    assert abs(norm(vector) - 1.0) < 1e-5
    assert body["prompt_eval_count"] > 0 and body["total_duration"] > 0


def test_batch_equals_one_by_one(server: Server) -> None:
    texts = ["Why is the sky blue?", "Why is the grass green?", "café"]
    batch = embed(server, input=texts)["embeddings"]
    assert len(batch) == 3
    for text, vector in zip(texts, batch):
        [single] = embed(server, input=text)["embeddings"]
        assert max(abs(a - b) for a, b in zip(vector, single)) < 1e-5
    assert batch[0] != batch[1]


def test_an_empty_string_is_no_input_and_only_loads_the_model(server: Server) -> None:
    body = embed(server, input="")  # as Ollama's EmbedHandler
    assert body["embeddings"] == [] and body["prompt_eval_count"] == 0
    assert MODEL in [m["name"] for m in server.get("/api/ps").json()["models"]]


def test_dimensions_below_one_keep_the_whole_vector(server: Server) -> None:
    [whole] = embed(server, input="hello")["embeddings"]
    [negative] = embed(server, input="hello", dimensions=-5)["embeddings"]
    assert negative == whole


def test_dimensions_truncates_then_normalizes(server: Server) -> None:
    [vector] = embed(server, input="hello", dimensions=32)["embeddings"]
    assert len(vector) == 32 and abs(norm(vector) - 1.0) < 1e-5


def test_input_longer_than_context_is_truncated_by_default(server: Server) -> None:
    body = embed(server, input="word " * 300, options={"num_ctx": 64})
    assert body["prompt_eval_count"] == 64


def test_input_longer_than_context_with_truncate_false_is_400(server: Server) -> None:
    reply = server.post("/api/embed", {"model": MODEL, "input": "word " * 300, "truncate": False,
                                       "options": {"num_ctx": 64}})
    assert reply.status == 400
    assert reply.json() == {"error": "the input length exceeds the context length"}


def test_bad_input_type_is_400(server: Server) -> None:
    reply = server.post("/api/embed", {"model": MODEL, "input": [1, 2]})
    assert reply.status == 400 and "input" in reply.json()["error"]


def test_legacy_embeddings_is_not_normalized(server: Server) -> None:
    reply = server.post("/api/embeddings", {"model": MODEL, "prompt": "Why is the sky blue?"})
    assert reply.status == 200
    vector = reply.json()["embedding"]
    [normalized] = embed(server, input="Why is the sky blue?")["embeddings"]
    assert len(vector) == 640 and abs(norm(vector) - 1.0) > 1e-3
    scale = norm(vector)
    assert max(abs(a / scale - b) for a, b in zip(vector, normalized)) < 1e-5

"""An encoder embedding model end to end: all-MiniLM-L6-v2's safetensors uploaded and converted by
/api/create, then /api/embed compared with llama.cpp's own embedding of the same GGUF (its own
pooling, the whole input in one decode)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterator

import numpy as np
import orjson
import pytest

from tests.bert_files import LlamaEmbedder, extract_minilm, llama_embedder
from tests.e2e.server import Server
from tests.e2e.test_cli import corral, one_error_line

MODEL = "minilm:test"
SHORT = ["A man is playing a guitar.", "Someone plays the guitar.",
         "The stock market fell sharply today after the announcement."]


@pytest.fixture(scope="module")
def created(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[dict]]:
    """The model, created from its uploaded files; the statuses create streamed."""
    folder = extract_minilm(tmp_path_factory.mktemp("minilm"))
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = path.read_bytes()
        digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
        assert server.post(f"/api/blobs/{digest}", raw=data).status in (200, 201)
        files[str(path.relative_to(folder))] = digest
    reply = server.post("/api/create", {"model": MODEL, "files": files})
    assert reply.status == 200, reply.body
    yield reply.lines()
    # Unloaded first: the session's server must be left as it was found (tests read /api/ps).
    assert server.post("/api/generate", {"model": MODEL, "keep_alive": 0}).status == 200
    server.request("DELETE", "/api/delete", {"model": MODEL})


@pytest.fixture(scope="module")
def reference(server: Server, created: list[dict]) -> Iterator[LlamaEmbedder]:
    """llama.cpp's own embedder over the GGUF the server stored."""
    modelfile = server.post("/api/show", {"model": MODEL}).json()["modelfile"]
    weights = next(line.split(" ", 1)[1] for line in modelfile.splitlines()
                   if line.startswith("FROM "))
    with llama_embedder(Path(weights), n_seq=1) as embedder:
        yield embedder


def embed(server: Server, inputs: list[str], **extra: object) -> list[np.ndarray]:
    reply = server.post("/api/embed", {"model": MODEL, "input": inputs, **extra})
    assert reply.status == 200, reply.body
    return [np.array(v) for v in reply.json()["embeddings"]]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_safetensors_files_are_converted_into_an_embedding_model(server: Server,
                                                                 created: list[dict]) -> None:
    assert {"status": "converting model"} in created and created[-1] == {"status": "success"}
    shown = server.post("/api/show", {"model": MODEL}).json()
    assert shown["capabilities"] == ["embedding"]
    assert shown["model_info"]["bert.pooling_type"] == 1


@pytest.mark.parametrize("text", SHORT)
def test_short_inputs_embed_as_llama_cpp_embeds_them(server: Server, reference: LlamaEmbedder,
                                                     text: str) -> None:
    [ours] = embed(server, [text])
    [theirs] = reference.embed(text)
    assert cosine(ours, theirs) >= 0.9999


def test_an_input_past_the_models_512_positions_is_cut_to_them(
        server: Server, reference: LlamaEmbedder) -> None:
    long = " ".join(f"word{i}" for i in range(700))
    tokens = reference.tokenize(long)
    [ours] = embed(server, [long])
    [theirs] = reference.embed_ids(tokens[:512])
    assert len(tokens) > 512 and cosine(ours, theirs) >= 0.9999


def test_truncate_false_refuses_an_input_past_the_models_positions(server: Server,
                                                                   created: list[dict]) -> None:
    reply = server.post("/api/embed", {"model": MODEL, "truncate": False,
                                       "input": " ".join(["word"] * 700)})
    assert reply.status == 400 and "exceeds the context length" in reply.json()["error"]


def test_many_inputs_decoded_together_embed_as_each_alone(server: Server,
                                                          created: list[dict]) -> None:
    inputs = [f"Sentence number {i} is about {topic}." for i, topic in
              enumerate(["cats", "dogs", "taxes", "the sea", "music"] * 8)]
    together = embed(server, inputs)
    alone = [embed(server, [text])[0] for text in inputs[:5]]
    assert all(cosine(a, b) >= 0.99999 for a, b in zip(together, alone))


def test_a_paraphrase_is_closer_than_an_unrelated_sentence(server: Server,
                                                           created: list[dict]) -> None:
    guitar, plays, market = embed(server, SHORT)
    assert cosine(guitar, plays) > cosine(guitar, market) + 0.3


@pytest.mark.parametrize("path,body,endpoint", [
    ("/api/generate", {"prompt": "hi"}, "generate"),
    ("/api/chat", {"messages": [{"role": "user", "content": "hi"}]}, "chat"),
    ("/api/generate", {}, "generate"),  # loading it so too, as Ollama's handlers refuse it
    ("/api/chat", {"messages": []}, "chat"),
])
def test_an_embedding_model_does_not_generate(server: Server, created: list[dict], path: str,
                                              body: dict, endpoint: str) -> None:
    reply = server.post(path, {"model": MODEL, **body})
    assert reply.status == 400 and reply.json()["error"] == f'"{MODEL}" does not support {endpoint}'


def test_corral_run_prints_the_embedding_cut_to_dimensions(server: Server,
                                                          created: list[dict]) -> None:
    result = corral(server.base, "run", MODEL, SHORT[0], "--dimensions", "8")
    assert result.returncode == 0, result.stderr
    [line] = result.stdout.splitlines()
    [expected] = embed(server, [SHORT[0]], dimensions=8)
    assert np.allclose(orjson.loads(line), expected)


def test_corral_run_truncate_false_refuses_an_input_past_the_models_positions(
        server: Server, created: list[dict]) -> None:
    result = corral(server.base, "run", MODEL, " ".join(["word"] * 700), "--truncate=false")
    assert "exceeds the context length" in one_error_line(result)

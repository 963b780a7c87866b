"""The official `ollama` Python client works against corral unchanged."""

from __future__ import annotations

import ollama
import pytest

from tests.e2e.conftest import MODEL, QUICK
from tests.e2e.server import Server


@pytest.fixture
def client(server: Server) -> ollama.Client:
    return ollama.Client(host=f"http://{server.base}")


def test_generate_streaming_and_not(client: ollama.Client) -> None:
    parts = list(client.generate(model=MODEL, prompt="Why is the sky blue?", stream=True,
                                 options=QUICK))
    assert parts[-1].done and parts[-1].eval_count == 8
    whole = client.generate(model=MODEL, prompt="Why is the sky blue?", options=QUICK)
    assert whole.response == "".join(p.response for p in parts)


def test_chat(client: ollama.Client) -> None:
    reply = client.chat(model=MODEL, messages=[{"role": "user", "content": "Hello!"}],
                        options=QUICK)
    assert reply.message.role == "assistant" and reply.message.content
    assert reply.done_reason == "length"


def test_embed(client: ollama.Client) -> None:
    reply = client.embed(model=MODEL, input=["a", "b"])
    assert len(reply.embeddings) == 2 and len(reply.embeddings[0]) == 640


def test_list_show_ps(client: ollama.Client) -> None:
    assert MODEL in [m.model for m in client.list().models]
    assert client.show(MODEL).details.family == "gemma3"
    client.generate(model=MODEL, prompt="", keep_alive="5m")
    assert MODEL in [m.model for m in client.ps().models]


def test_missing_model_raises_response_error_with_404(client: ollama.Client) -> None:
    with pytest.raises(ollama.ResponseError) as info:
        client.generate(model="nope:1b", prompt="hi")
    assert info.value.status_code == 404
    assert "not found" in info.value.error


def test_create_copy_delete(client: ollama.Client) -> None:
    statuses = [p.status for p in client.create(model="pirate", from_=MODEL,
                                                system="Talk like a pirate.", stream=True)]
    assert statuses[-1] == "success"
    assert 'SYSTEM """Talk like a pirate."""' in client.show("pirate").modelfile
    client.copy("pirate", "pirate-copy")
    client.delete("pirate")
    client.delete("pirate-copy")
    assert not {"pirate:latest", "pirate-copy:latest"} & {m.model for m in client.list().models}

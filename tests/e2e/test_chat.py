"""POST /api/chat against the real server and model."""

from __future__ import annotations

from tests.e2e.conftest import MODEL, QUICK
from tests.e2e.server import Server

HELLO = [{"role": "user", "content": "Hello, how are you?"}]


def chat(server: Server, messages: list[dict], **body) -> list[dict]:
    reply = server.post("/api/chat", {"model": MODEL, "messages": messages, **body})
    assert reply.status == 200, reply.body
    return reply.lines()


def test_streams_assistant_message_chunks_then_stats(server: Server) -> None:
    lines = chat(server, HELLO, options=QUICK)
    for line in lines[:-1]:
        assert line["done"] is False
        assert line["message"]["role"] == "assistant"
    final = lines[-1]
    assert final["done"] is True and final["message"] == {"role": "assistant", "content": ""}
    assert final["eval_count"] == 8 and final["prompt_eval_count"] > 0
    assert "context" not in final
    assert "".join(line["message"]["content"] for line in lines).strip()


def test_non_streaming_reply_holds_the_whole_message(server: Server) -> None:
    streamed = "".join(m["message"]["content"] for m in chat(server, HELLO, options=QUICK))
    reply = server.post("/api/chat", {"model": MODEL, "messages": HELLO, "stream": False,
                                      "options": QUICK})
    body = reply.json()
    assert body["done"] is True and body["done_reason"] == "length"
    assert body["message"] == {"role": "assistant", "content": streamed}


def test_history_and_system_message_are_part_of_the_prompt(server: Server) -> None:
    short = chat(server, HELLO, options=QUICK)[-1]["prompt_eval_count"]
    history = [{"role": "system", "content": "You are terse."}, *HELLO,
               {"role": "assistant", "content": "Fine, thanks."},
               {"role": "user", "content": "What is two plus two?"}]
    longer = chat(server, history, options=QUICK)[-1]["prompt_eval_count"]
    assert longer > short + 10


def test_history_longer_than_num_ctx_is_truncated_not_refused(server: Server) -> None:
    history = []
    for i in range(30):
        history += [{"role": "user", "content": f"Question number {i} about the weather?"},
                    {"role": "assistant", "content": f"Answer number {i}: it is sunny."}]
    history.append({"role": "user", "content": "And tomorrow?"})
    final = chat(server, history, options={"num_ctx": 128, "num_predict": 4, "temperature": 0})[-1]
    assert final["done"] is True
    assert 10 < final["prompt_eval_count"] <= 127


def test_empty_messages_load_the_model(server: Server) -> None:
    reply = server.post("/api/chat", {"model": MODEL, "messages": []})
    body = reply.json()
    assert reply.status == 200
    assert body["done_reason"] == "load"
    assert body["message"] == {"role": "assistant", "content": ""}


def test_empty_messages_with_keep_alive_zero_unload(server: Server) -> None:
    server.post("/api/chat", {"model": MODEL, "messages": []})
    reply = server.post("/api/chat", {"model": MODEL, "messages": [], "keep_alive": 0})
    assert reply.json()["done_reason"] == "unload"
    assert server.get("/api/ps").json()["models"] == []

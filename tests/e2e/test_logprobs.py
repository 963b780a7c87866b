"""logprobs through the official clients: each sampled token's log-softmax over the raw logits of
the whole vocabulary, with the most likely tokens beside it; and truncate/shift switched off."""

from __future__ import annotations

import math

import ollama
import openai
import pytest

from tests.e2e.conftest import MODEL
from tests.e2e.server import Server

# Greedy and without penalties: the sampled token must be the most likely one.
GREEDY = {"num_predict": 8, "temperature": 0, "repeat_penalty": 1.0}


@pytest.fixture
def client(server: Server) -> ollama.Client:
    return ollama.Client(host=f"http://{server.base}")


@pytest.fixture
def oai(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://{server.base}/v1", api_key="corral",
                         _strict_response_validation=True)


def assert_own_top_one(entries: list, eval_count: int) -> None:
    assert len(entries) == eval_count
    for entry in entries:
        top = entry.top_logprobs
        assert top[0].token == entry.token and math.isclose(top[0].logprob, entry.logprob)
        assert entry.logprob <= 0 and sum(math.exp(t.logprob) for t in top) <= 1 + 1e-6
        assert [t.logprob for t in top] == sorted((t.logprob for t in top), reverse=True)


def test_a_greedy_generation_samples_its_own_top_one(client: ollama.Client) -> None:
    reply = client.generate(model=MODEL, prompt="Why is the sky blue?", options=GREEDY,
                            logprobs=True, top_logprobs=3)
    assert_own_top_one(reply.logprobs, reply.eval_count)
    assert "".join(e.token for e in reply.logprobs) == reply.response


def test_streamed_logprobs_come_with_their_tokens_and_equal_the_whole_ones(
        client: ollama.Client) -> None:
    parts = list(client.chat(model=MODEL, messages=[{"role": "user", "content": "Hello!"}],
                             options=GREEDY, logprobs=True, top_logprobs=2, stream=True))
    streamed = [e for p in parts for e in (p.logprobs or [])]
    whole = client.chat(model=MODEL, messages=[{"role": "user", "content": "Hello!"}],
                        options=GREEDY, logprobs=True, top_logprobs=2)
    assert_own_top_one(streamed, parts[-1].eval_count)
    assert [e.token for e in streamed] == [e.token for e in whole.logprobs]
    # The second request's prompt comes from the cache, whose arithmetic may differ in the last
    # digits: close, not rounded alike (a rounding boundary would fail by chance).
    assert all(math.isclose(a.logprob, b.logprob, abs_tol=1e-3)
               for a, b in zip(streamed, whole.logprobs))


def test_logprobs_not_asked_for_are_not_sent(client: ollama.Client) -> None:
    assert client.generate(model=MODEL, prompt="Hi", options=GREEDY).logprobs is None


def test_more_than_twenty_top_logprobs_are_400(server: Server) -> None:
    reply = server.post("/api/generate", {"model": MODEL, "prompt": "Hi", "logprobs": True,
                                          "top_logprobs": 21})
    assert reply.status == 400 and reply.json()["error"] == "top_logprobs must be between 0 and 20"


def test_openai_chat_logprobs_parse_strictly(oai: openai.OpenAI) -> None:
    reply = oai.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello!"}], max_tokens=6,
        temperature=0, logprobs=True, top_logprobs=2)
    entries = reply.choices[0].logprobs.content
    assert len(entries) == reply.usage.completion_tokens
    assert all(len(e.top_logprobs) == 2 and bytes(e.bytes).decode(errors="replace") == e.token
               for e in entries)


def test_openai_legacy_completion_logprobs_have_offsets(oai: openai.OpenAI) -> None:
    reply = oai.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=6,
                                   temperature=0, logprobs=2)
    logprobs = reply.choices[0].logprobs
    text = reply.choices[0].text
    assert "".join(logprobs.tokens) == text and len(logprobs.token_logprobs) == 6
    assert [text[o:o + len(t)] for o, t in zip(logprobs.text_offset, logprobs.tokens)] == \
        logprobs.tokens
    assert all(len(top) <= 2 for top in logprobs.top_logprobs)


# ---- truncate and shift -----------------------------------------------------------------------

def test_truncate_false_refuses_a_prompt_longer_than_the_context(server: Server) -> None:
    reply = server.post("/api/generate", {"model": MODEL, "prompt": "word " * 3000,
                                          "truncate": False, "options": {"num_ctx": 1024}})
    assert reply.status == 400
    assert reply.json()["error"] == "the input length exceeds the context length"


def test_shift_false_ends_the_answer_when_the_context_is_full(server: Server) -> None:
    reply = server.post("/api/generate", {
        "model": MODEL, "raw": True, "stream": False, "shift": False,
        "prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,",
        "options": {"num_ctx": 128, "num_predict": 300, "temperature": 0}}).json()
    assert reply["done_reason"] == "length" and reply["eval_count"] < 300  # was: shifted on
    # The context holds 128 tokens; the last one sampled is never stored in it.
    assert reply["prompt_eval_count"] + reply["eval_count"] == 128 + 1


# ---- think and reasoning ----------------------------------------------------------------------

@pytest.mark.parametrize("think,error", [
    ("huge", 'invalid think value: "huge" (must be "high", "medium", "low", "max", true, or false)'),
    (3, 'think must be a boolean or string ("high", "medium", "low", "max", true, or false)'),
    ("max", f'"{MODEL}" does not support thinking'),
])
def test_think_values_are_checked_as_ollama_checks_them(server: Server, think: object,
                                                        error: str) -> None:
    reply = server.post("/api/chat", {"model": MODEL, "think": think,
                                      "messages": [{"role": "user", "content": "hi"}]})
    assert reply.status == 400 and reply.json()["error"] == error


def test_an_unknown_reasoning_effort_is_400(oai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="invalid reasoning value"):
        oai.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                    reasoning_effort="extreme")  # type: ignore[arg-type]

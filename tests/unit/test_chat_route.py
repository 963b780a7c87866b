"""POST /api/chat and /v1/chat/completions in process: what the scheduler is handed for a
conversation (Ollama's ChatHandler and openai.FromChatRequest are the reference)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.unit.test_anthropic_messages import Client, ScriptedScheduler, scripted_app


@pytest.fixture
async def client(aiohttp_client: Client, tmp_path: Path) -> tuple[TestClient, ScriptedScheduler]:
    return await scripted_app(aiohttp_client, tmp_path, {"primed": {
        "system": "Modelfile system.",
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}})


async def chat(client: tuple[TestClient, ScriptedScheduler],
               messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages the scheduler was handed for this request."""
    resp = await client[0].post("/api/chat", json={"model": "primed", "messages": messages,
                                                   "stream": False})
    assert resp.status == 200, await resp.text()
    return client[1].submitted[-1]["prompt"]["messages"]


async def test_the_modelfile_system_comes_first_when_the_request_brings_none(
        client: tuple[TestClient, ScriptedScheduler]) -> None:
    sent = await chat(client, [{"role": "user", "content": "Q"}])
    assert [m["content"] for m in sent] == ["Modelfile system.", "Hi", "Hello", "Q"]


async def test_a_request_that_brings_its_own_system_gets_only_that_one(
        client: tuple[TestClient, ScriptedScheduler]) -> None:
    sent = await chat(client, [{"role": "system", "content": "Mine."},
                               {"role": "user", "content": "Q"}])
    assert [m["content"] for m in sent] == ["Hi", "Hello", "Mine.", "Q"]


async def test_an_openai_history_keeps_its_call_ids_and_names_each_result_by_its_call(
        client: tuple[TestClient, ScriptedScheduler]) -> None:
    calls = [{"id": "call_1", "type": "function",
              "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}},
             {"id": "call_2", "type": "function",
              "function": {"name": "get_time", "arguments": "{}"}}]
    resp = await client[0].post("/v1/chat/completions", json={"model": "primed", "messages": [
        {"role": "user", "content": "Weather and time?"},
        {"role": "assistant", "content": None, "tool_calls": calls},
        {"role": "tool", "tool_call_id": "call_2", "content": "noon"},
        {"role": "tool", "tool_call_id": "call_1", "content": "18 degrees"}]})
    assert resp.status == 200, await resp.text()
    sent = client[1].submitted[-1]["prompt"]["messages"]
    assert [c["id"] for c in sent[-3]["tool_calls"]] == ["call_1", "call_2"]
    assert [(m["tool_call_id"], m["tool_name"]) for m in sent[-2:]] == [
        ("call_2", "get_time"), ("call_1", "get_weather")]


async def test_a_role_in_capitals_is_taken_lowercased_as_ollama_takes_it(
        client: tuple[TestClient, ScriptedScheduler]) -> None:
    sent = await chat(client, [{"role": "User", "content": "Q"}])
    assert sent[-1] == {"role": "user", "content": "Q"}


async def test_deepseek_r1_sees_no_thinking_of_its_earlier_turns(
        client: tuple[TestClient, ScriptedScheduler]) -> None:
    # As Ollama's filterThinkTags (deepseek-r1 and the qwen3 family).
    resp = await client[0].post("/api/copy", json={"source": "primed",
                                                   "destination": "deepseek-r1:test"})
    assert resp.status == 200
    resp = await client[0].post("/api/chat", json={"model": "deepseek-r1:test", "stream": False,
                                                   "messages": [
        {"role": "user", "content": "Q1"},
        {"role": "assistant", "content": "<think>\n\n</think>\n\nA1"},
        {"role": "user", "content": "Q2"}]})
    assert resp.status == 200, await resp.text()
    sent = client[1].submitted[-1]["prompt"]["messages"]
    assert [m["content"] for m in sent if m["role"] == "assistant"] == ["Hello", "A1"]


async def test_another_model_keeps_its_earlier_turns_as_they_were(
        client: tuple[TestClient, ScriptedScheduler]) -> None:
    sent = await chat(client, [{"role": "user", "content": "Q1"},
                               {"role": "assistant", "content": "<think>t</think>A1"},
                               {"role": "user", "content": "Q2"}])
    assert sent[-2]["content"] == "<think>t</think>A1"


async def test_any_role_goes_to_the_template_as_ollama_passes_it_on(
        client: tuple[TestClient, ScriptedScheduler]) -> None:
    sent = await chat(client, [{"role": "user", "content": "Q"},
                               {"role": "ipython", "content": "42"}])  # Llama 3.1's tool role
    assert sent[-1] == {"role": "ipython", "content": "42"}

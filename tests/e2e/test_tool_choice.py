"""tool_choice on /v1, enforced: "required" and a named function hold the answer to a call of
those tools in the template's own syntax, so even the small demo model calls (Ollama ignores
tool_choice; llama-server has no named form)."""

from __future__ import annotations

import json
from typing import Iterator

import openai
import pytest

from tests.e2e.conftest import MODEL
from tests.e2e.server import Server
from tests.e2e.test_tools_thinking import TOOL_TEMPLATE, WEATHER

# A template whose calls open with a tag, as Qwen's do: the grammar must write it first.
TAGGED_TEMPLATE = TOOL_TEMPLATE.replace(
    '{{ if .ToolCalls }}{{ range .ToolCalls }}{"name"',
    '{{ if .ToolCalls }}<tool_call>{{ range .ToolCalls }}{"name"').replace(
    "{{ end }}{{ else }}{{ .Content }}", "{{ end }}</tool_call>{{ else }}{{ .Content }}")
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "The time in a city",
    "parameters": {"type": "object", "properties": {"zone": {"type": "string", "maxLength": 12}},
                   "required": ["zone"]}}}
# Every forced call's argument is bounded and CALL_ROOM holds the longest call but for runs of
# blanks (each character may be a 6-token \u escape): an unbounded city sampled at random once ran
# past 80 tokens, and the answer was cut before its call closed. Which call a seed gives also varies
# with the prompt cache's state, so no test may count on a short one.
CITY = {"type": "function", "function": {
    **WEATHER["function"],
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}},
                   "required": ["city"]}}}
CALL_ROOM = 200
ASK = [{"role": "user", "content": "Tell me a short story."}]  # asks for no tool at all


@pytest.fixture(scope="module", params=["plain", "tagged"])
def model(server: Server, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"chooser-{request.param}:1"
    template = TOOL_TEMPLATE if request.param == "plain" else TAGGED_TEMPLATE
    reply = server.post("/api/create", {"model": name, "from": MODEL, "template": template,
                                        "stream": False})
    assert reply.status == 200, reply.body
    yield name
    server.request("DELETE", "/api/delete", {"model": name})


@pytest.fixture
def oai(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://{server.base}/v1", api_key="corral",
                         _strict_response_validation=True)


def test_required_makes_even_the_demo_model_call_a_tool(oai: openai.OpenAI, model: str) -> None:
    reply = oai.chat.completions.create(model=model, messages=ASK, tools=[CITY, TIME],
                                        tool_choice="required", max_tokens=CALL_ROOM, seed=1)
    [call] = reply.choices[0].message.tool_calls
    assert reply.choices[0].finish_reason == "tool_calls"
    arguments = json.loads(call.function.arguments)
    assert (call.function.name, list(arguments)) in [("get_weather", ["city"]),
                                                     ("get_time", ["zone"])]


def test_a_named_function_is_the_one_called(oai: openai.OpenAI, model: str) -> None:
    for name in ("get_weather", "get_time"):
        reply = oai.chat.completions.create(
            model=model, messages=ASK, tools=[CITY, TIME], max_tokens=CALL_ROOM, seed=2,
            tool_choice={"type": "function", "function": {"name": name}})
        assert [c.function.name for c in reply.choices[0].message.tool_calls] == [name]


def test_a_streamed_forced_call_comes_back_as_tool_calls(oai: openai.OpenAI, model: str) -> None:
    chunks = list(oai.chat.completions.create(
        model=model, messages=ASK, tools=[TIME], tool_choice="required", max_tokens=CALL_ROOM,
        stream=True))
    calls = [c for chunk in chunks for choice in chunk.choices
             for c in (choice.delta.tool_calls or [])]
    assert [c.function.name for c in calls] == ["get_time"]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_an_unknown_named_function_is_400(oai: openai.OpenAI, model: str) -> None:
    with pytest.raises(openai.BadRequestError, match="not among the tools"):
        oai.chat.completions.create(model=model, messages=ASK, tools=[WEATHER],
                                    tool_choice={"type": "function", "function": {"name": "x"}})


def test_none_answers_without_tools(oai: openai.OpenAI, model: str) -> None:
    reply = oai.chat.completions.create(model=model, messages=ASK, tools=[WEATHER],
                                        tool_choice="none", max_tokens=8)
    assert reply.choices[0].message.tool_calls is None and reply.choices[0].message.content

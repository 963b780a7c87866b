"""Tools, thinking and fill-in-the-middle through the model's template, on the real model."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import MODEL
from tests.e2e.server import Server

# Gemma's turns plus the tool parts of an Ollama template: the definitions go into the system
# turn as JSON, and a past call is written back as the JSON object the model is asked to emit.
TOOL_TEMPLATE = """{{- if .Tools }}<start_of_turn>user
Tools: {{ json .Tools }}<end_of_turn>
{{ end }}
{{- range .Messages }}
{{- if eq .Role "assistant" }}<start_of_turn>model
{{ if .ToolCalls }}{{ range .ToolCalls }}{"name": "{{ .Function.Name }}", "arguments": {{ json .Function.Arguments }}}{{ end }}{{ else }}{{ .Content }}{{ end }}<end_of_turn>
{{ else }}<start_of_turn>user
{{ if eq .Role "tool" }}Result: {{ end }}{{ .Content }}<end_of_turn>
{{ end }}
{{- end }}<start_of_turn>model
"""
THINK_TEMPLATE = """{{- range .Messages }}
{{- if eq .Role "assistant" }}<start_of_turn>model
{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}{{ .Content }}<end_of_turn>
{{ else }}<start_of_turn>user
{{ .Content }}<end_of_turn>
{{ end }}
{{- end }}<start_of_turn>model
"""
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
# The model is small: the call's shape is held by a grammar, as `format` does for any answer.
CALL = {"type": "object", "required": ["name", "arguments"], "properties": {
    "name": {"enum": ["get_weather"]},
    "arguments": {"type": "object", "required": ["city"],
                  "properties": {"city": {"type": "string", "maxLength": 16}}}}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def tool_model(server: Server) -> str:
    for name, template in (("toolbox", TOOL_TEMPLATE), ("thinker", THINK_TEMPLATE)):
        reply = server.post("/api/create", {"model": name, "from": MODEL, "template": template,
                                            "stream": False})
        assert reply.status == 200, reply.body
    return "toolbox"


def _chat(server: Server, model: str, **extra: object) -> list[dict]:
    # Room for the longest call CALL allows (16 characters of 6-token \u escapes at most).
    body = {"model": model, "messages": ASK, "options": {"seed": 1, "num_predict": 160}, **extra}
    reply = server.post("/api/chat", body)
    assert reply.status == 200, reply.body
    return reply.lines() if body.get("stream", True) else [reply.json()]


def test_a_tool_call_comes_back_as_tool_calls(server: Server, tool_model: str) -> None:
    (reply,) = _chat(server, tool_model, tools=[WEATHER], format=CALL, stream=False)
    calls = reply["message"]["tool_calls"]
    assert [c["function"]["name"] for c in calls] == ["get_weather"]
    assert isinstance(calls[0]["function"]["arguments"]["city"], str)
    assert reply["message"]["content"] == ""


def test_a_streamed_tool_call_comes_back_as_tool_calls(server: Server, tool_model: str) -> None:
    lines = _chat(server, tool_model, tools=[WEATHER], format=CALL)
    calls = [call for line in lines for call in line["message"].get("tool_calls", [])]
    assert [c["function"]["name"] for c in calls] == ["get_weather"]
    assert "".join(line["message"]["content"] for line in lines) == ""
    assert lines[-1]["done"] is True


def test_tool_results_are_taken_back_into_the_conversation(server: Server,
                                                           tool_model: str) -> None:
    history = ASK + [
        {"role": "assistant", "content": "",
         "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "tool_name": "get_weather", "content": "18 degrees and sunny"}]
    reply = server.post("/api/chat", {"model": tool_model, "messages": history, "stream": False,
                                      "tools": [WEATHER], "options": {"num_predict": 8}})
    assert reply.status == 200 and reply.json()["done"] is True


def test_tools_for_a_template_without_tools_are_400(server: Server) -> None:
    reply = server.post("/api/chat", {"model": MODEL, "messages": ASK, "tools": [WEATHER]})
    # Ollama names the model in full here (scheduleRunner's capability error)
    assert reply.status == 400 and reply.json() == {
        "error": "registry.ollama.ai/library/gemma3:270m does not support tools"}


def test_think_for_a_template_without_thinking_is_400(server: Server) -> None:
    reply = server.post("/api/chat", {"model": MODEL, "messages": ASK, "think": True})
    assert reply.status == 400
    assert reply.json() == {"error": f'"{MODEL}" does not support thinking'}


def test_think_is_accepted_by_a_template_that_marks_thinking(server: Server,
                                                             tool_model: str) -> None:
    assert "thinking" in server.post("/api/show", {"model": "thinker"}).json()["capabilities"]
    (reply,) = _chat(server, "thinker", think=True, stream=False)
    message = reply["message"]
    assert message["role"] == "assistant" and (message["content"] or message.get("thinking"))


def test_suffix_fills_the_middle_through_the_template(server: Server) -> None:
    fim = "<fim_prefix>{{ .Prompt }}<fim_suffix>{{ .Suffix }}<fim_middle>"
    assert server.post("/api/create", {"model": "filler", "from": MODEL, "template": fim,
                                       "stream": False}).status == 200
    options = {"num_predict": 1, "temperature": 0}
    filled = server.post("/api/generate", {"model": "filler", "prompt": "def add(a, b):",
                                           "suffix": "    return c", "stream": False,
                                           "options": options}).json()
    raw = server.post("/api/generate", {
        "model": "filler", "raw": True, "stream": False, "options": options,
        "prompt": "<fim_prefix>def add(a, b):<fim_suffix>    return c<fim_middle>"}).json()
    assert filled["prompt_eval_count"] == raw["prompt_eval_count"]


def test_suffix_for_a_template_without_one_is_400(server: Server) -> None:
    reply = server.post("/api/generate", {"model": MODEL, "prompt": "a", "suffix": "b"})
    assert reply.status == 400 and reply.json() == {
        "error": "registry.ollama.ai/library/gemma3:270m does not support insert"}


def test_show_lists_tools_for_a_template_that_takes_them(server: Server, tool_model: str) -> None:
    assert server.post("/api/show", {"model": tool_model}).json()["capabilities"] == [
        "completion", "tools"]


PREFILLED_THINK_TEMPLATE = THINK_TEMPLATE + "{{ if .Think }}<think>{{ end }}"


def test_a_template_that_opens_the_thinking_block_gets_its_output_as_thinking(
        server: Server) -> None:
    assert server.post("/api/create", {"model": "prefilled", "from": MODEL, "stream": False,
                                       "template": PREFILLED_THINK_TEMPLATE}).status == 200
    body = {"model": "prefilled", "messages": ASK, "think": True, "stream": False,
            "options": {"num_predict": 12, "temperature": 0}}
    message = server.post("/api/chat", body).json()["message"]
    # The prompt ended inside <think>: what the model says is thinking until it writes </think>.
    assert message.get("thinking") and "</think>" not in message["thinking"]


def test_a_format_holds_the_answer_after_the_thinking_not_the_thinking(server: Server) -> None:
    # As Ollama constrains only what follows the thinking. The prompt ends inside <think>;
    # held to {"type": "boolean"} from the first token, the thinking was "true" or "false".
    server.post("/api/create", {"model": "prefilled", "from": MODEL, "stream": False,
                                "template": PREFILLED_THINK_TEMPLATE})
    body = {"model": "prefilled", "messages": ASK, "stream": False, "format": {"type": "boolean"},
            "options": {"num_predict": 12, "temperature": 0}}
    message = server.post("/api/chat", body).json()["message"]
    assert message["thinking"].strip() not in ("true", "false")
    assert len(message["thinking"].split()) > 2


def test_a_model_that_can_think_thinks_unless_the_request_says_not_to(server: Server) -> None:
    # As Ollama (routes.go): `think` left out is on for a model whose template thinks.
    server.post("/api/create", {"model": "prefilled", "from": MODEL, "stream": False,
                                "template": PREFILLED_THINK_TEMPLATE})
    ask = {"model": "prefilled", "stream": False, "options": {"num_predict": 12, "temperature": 0}}
    chat = server.post("/api/chat", {**ask, "messages": ASK}).json()["message"]
    generated = server.post("/api/generate", {**ask, "prompt": ASK[0]["content"]}).json()
    assert chat.get("thinking") and generated.get("thinking")
    plain = server.post("/api/chat", {**ask, "messages": ASK, "think": False}).json()["message"]
    assert "thinking" not in plain and plain["content"]

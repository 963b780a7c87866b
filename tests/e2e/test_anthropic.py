"""Anthropic's Messages API, /v1/messages, driven by the official `anthropic` SDK on the real
server and model. Strict response validation: every reply and every stream event must parse as
the SDK's own types, or the call raises."""

from __future__ import annotations

from typing import Any

import json

import anthropic
import pytest
from anthropic.types import Message

from tests.e2e.conftest import MODEL
from tests.e2e.server import Server
from tests.e2e.test_tools_thinking import PREFILLED_THINK_TEMPLATE, TOOL_TEMPLATE

ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
WEATHER = {"name": "get_weather", "description": "The weather in a city",
           "input_schema": {"type": "object", "required": ["city"],
                            "properties": {"city": {"type": "string", "maxLength": 16}}}}
TIME = {"name": "get_time", "description": "The time in a time zone",
        "input_schema": {"type": "object", "required": ["zone"],
                         "properties": {"zone": {"type": "string", "maxLength": 12}}}}
# The demo model seldom calls a tool by itself: tool_choice "any" holds its answer to a call
# (a grammar), and the tools template's parser reads the call back, as on /api/chat.
ANY_TOOL: dict[str, Any] = {"type": "any"}
THINK = {"type": "enabled", "budget_tokens": 1024}
# Greedy, for answers that do not vary. The SDK (2.x) dropped its sampling arguments; clients
# still send the fields, and the server takes them.
GREEDY: dict[str, Any] = {"extra_body": {"temperature": 0}}


@pytest.fixture
def client(server: Server) -> anthropic.Anthropic:
    # max_retries=0: a bad request must fail at once, never look retryable
    return anthropic.Anthropic(base_url=f"http://{server.base}", api_key="unused",
                               max_retries=0, _strict_response_validation=True)


@pytest.fixture(scope="module")
def models(server: Server) -> dict[str, str]:
    """A model whose template takes tools, and one whose template opens a thinking block."""
    names = {"tools": "anthropic-tools", "thinker": "anthropic-thinker"}
    for name, template in ((names["tools"], TOOL_TEMPLATE),
                           (names["thinker"], PREFILLED_THINK_TEMPLATE)):
        reply = server.post("/api/create", {"model": name, "from": MODEL, "template": template,
                                            "stream": False})
        assert reply.status == 200, reply.body
    return names


def _tool_uses(message: Message) -> list[Any]:
    return [block for block in message.content if block.type == "tool_use"]


def test_create_answers_with_a_message_and_the_system_prompt_is_in_the_prompt(
        client: anthropic.Anthropic) -> None:
    plain = client.messages.create(model=MODEL, max_tokens=4, messages=ASK, **GREEDY)
    told = client.messages.create(model=MODEL, max_tokens=4, messages=ASK, **GREEDY,
                                  system="You are a pirate. Answer as one.")
    assert told.id.startswith("msg_") and told.type == "message" and told.role == "assistant"
    assert told.model == MODEL and told.content[0].type == "text" and told.content[0].text
    assert told.usage.input_tokens > plain.usage.input_tokens


def test_max_tokens_ends_the_answer_with_stop_reason_max_tokens(
        client: anthropic.Anthropic) -> None:
    reply = client.messages.create(model=MODEL, max_tokens=3, messages=ASK)
    assert reply.stop_reason == "max_tokens" and reply.usage.output_tokens == 3


def test_a_stream_gives_the_text_and_the_final_message(client: anthropic.Anthropic) -> None:
    with client.messages.stream(model=MODEL, max_tokens=8, messages=ASK, **GREEDY) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.content[0].type == "text" and final.content[0].text == text
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 8
    assert final.usage.input_tokens > 0


async def test_a_stop_sequence_ends_the_answer_before_it(client: anthropic.Anthropic) -> None:
    full = client.messages.create(model=MODEL, max_tokens=8, messages=ASK, **GREEDY)
    text = "".join(block.text for block in full.content if block.type == "text")
    stop = text.split()[1]
    cut = client.messages.create(model=MODEL, max_tokens=8, messages=ASK, **GREEDY,
                                 stop_sequences=[stop])
    assert "".join(block.text for block in cut.content if block.type == "text") \
        == text[:text.index(stop)]
    assert (cut.stop_reason, cut.stop_sequence) == ("stop_sequence", stop)


async def test_an_async_stream_gives_the_text(server: Server) -> None:
    client = anthropic.AsyncAnthropic(base_url=f"http://{server.base}", api_key="unused",
                                      max_retries=0, _strict_response_validation=True)
    async with client.messages.stream(model=MODEL, max_tokens=4, messages=ASK) as stream:
        text = "".join([piece async for piece in stream.text_stream])
    assert text


def test_a_tool_call_comes_back_as_a_tool_use_block(client: anthropic.Anthropic,
                                                   models: dict[str, str]) -> None:
    reply = client.messages.create(model=models["tools"], max_tokens=80, messages=ASK,
                                   tools=[WEATHER], tool_choice=ANY_TOOL, **GREEDY)
    [call] = _tool_uses(reply)
    assert call.id.startswith("toolu_") and call.name == "get_weather"
    assert isinstance(call.input["city"], str)
    assert reply.stop_reason == "tool_use"


def test_a_streamed_call_of_the_tool_named_by_tool_choice_comes_back_with_its_input(
        client: anthropic.Anthropic, models: dict[str, str]) -> None:
    with client.messages.stream(model=models["tools"], max_tokens=80, messages=ASK,
                                tools=[WEATHER, TIME], tool_choice={"type": "tool",
                                                                   "name": "get_time"},
                                **GREEDY) as stream:
        final = stream.get_final_message()
    [call] = _tool_uses(final)
    assert call.name == "get_time" and isinstance(call.input["zone"], str)
    assert final.stop_reason == "tool_use"


def test_a_tool_result_goes_back_into_the_conversation(client: anthropic.Anthropic,
                                                      models: dict[str, str]) -> None:
    first = client.messages.create(model=models["tools"], max_tokens=80, messages=ASK,
                                   tools=[WEATHER], tool_choice=ANY_TOOL, **GREEDY)
    [call] = _tool_uses(first)
    history = ASK + [{"role": "assistant", "content": first.content},
                     {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                                   "content": "18 degrees and sunny"}]}]
    second = client.messages.create(model=models["tools"], max_tokens=8, messages=history,
                                    tools=[WEATHER])
    assert second.type == "message"
    # The prompt now holds the call and its result too.
    assert second.usage.input_tokens > first.usage.input_tokens


def test_an_output_format_holds_the_answer_to_its_schema(client: anthropic.Anthropic) -> None:
    schema = {"type": "object", "required": ["city"],
              "properties": {"city": {"type": "string", "maxLength": 16}}}
    reply = client.messages.create(model=MODEL, max_tokens=40, messages=ASK, **GREEDY,
                                   output_config={"format": {"type": "json_schema",
                                                             "schema": schema}})
    assert reply.content[0].type == "text"
    assert isinstance(json.loads(reply.content[0].text)["city"], str)


def test_thinking_comes_first_as_a_thinking_block(client: anthropic.Anthropic,
                                                  models: dict[str, str]) -> None:
    reply = client.messages.create(model=models["thinker"], max_tokens=12, messages=ASK,
                                   thinking=THINK, **GREEDY)
    block = reply.content[0]
    assert block.type == "thinking" and block.thinking and block.signature == ""


def test_streamed_thinking_comes_first_as_a_thinking_block(client: anthropic.Anthropic,
                                                           models: dict[str, str]) -> None:
    with client.messages.stream(model=models["thinker"], max_tokens=12, messages=ASK,
                                thinking=THINK, **GREEDY) as stream:
        final = stream.get_final_message()
    assert final.content[0].type == "thinking" and final.content[0].thinking


def test_a_missing_max_tokens_is_a_bad_request_error(client: anthropic.Anthropic) -> None:
    # The SDK's create() will not send a request without max_tokens; its post() will.
    with pytest.raises(anthropic.BadRequestError) as error:
        client.post("/v1/messages", cast_to=Message, body={"model": MODEL, "messages": ASK})
    assert error.value.body == {"type": "error", "error": {
        "type": "invalid_request_error", "message": "max_tokens: Field required"}}


def test_an_unknown_model_is_a_not_found_error(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError):
        client.messages.create(model="no-such-model", max_tokens=4, messages=ASK)


def test_tools_for_a_model_without_tools_are_a_bad_request_error(
        client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="does not support tools"):
        client.messages.create(model=MODEL, max_tokens=4, messages=ASK, tools=[WEATHER])

"""POST /v1/responses on the real server and model, driven by the official `openai` package in
strict mode: every body and stream event must match the SDK's own types."""

from __future__ import annotations

import base64
import json

import openai
import pytest

from tests.e2e import test_tools_thinking
from tests.e2e.conftest import MODEL
from tests.e2e.server import Server
from tests.images import png

tool_model = test_tools_thinking.tool_model  # the fixture: the demo model with a tools template

PNG = base64.b64encode(png()).decode()
WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city",
           "parameters": {"type": "object", "required": ["city"], "properties": {
               # short, so that a forced call (greedy, below) always ends within its tokens
               "city": {"type": "string", "maxLength": 16}}}}
# A schema the grammar holds the answer to: a short answer that always ends by itself.
YES_NO = {"type": "json_schema", "name": "answer", "strict": True, "schema": {
    "type": "object", "required": ["answer"], "additionalProperties": False,
    "properties": {"answer": {"enum": ["yes", "no"]}}}}


@pytest.fixture
def client(server: Server) -> openai.OpenAI:
    # max_retries=0: a bad request must fail at once, never look retryable
    return openai.OpenAI(base_url=f"http://{server.base}/v1", api_key="unused", max_retries=0,
                         _strict_response_validation=True)


@pytest.fixture(scope="module")
def thinker(server: Server) -> str:
    """The demo model with a template whose prompt opens a thinking block: it always thinks."""
    reply = server.post("/api/create", {"model": "prefilled", "from": MODEL, "stream": False,
                                        "template": test_tools_thinking.PREFILLED_THINK_TEMPLATE})
    assert reply.status == 200, reply.body
    return "prefilled"


def test_a_string_input_gets_a_response_with_its_text_and_usage(client: openai.OpenAI) -> None:
    reply = client.responses.create(model=MODEL, input="Why is the sky blue?",
                                    max_output_tokens=8, temperature=0)
    assert reply.id.startswith("resp_") and reply.object == "response" and reply.model == MODEL
    [message] = reply.output
    assert message.type == "message" and message.role == "assistant"
    assert reply.output_text and reply.usage is not None
    assert reply.usage.output_tokens == 8
    assert reply.usage.total_tokens == reply.usage.input_tokens + 8


def test_an_item_list_with_instructions_is_answered(client: openai.OpenAI) -> None:
    reply = client.responses.create(
        model=MODEL, instructions="Answer yes or no, as JSON.", text={"format": YES_NO},
        input=[{"role": "user", "content": "Is the sky blue?"},
               {"role": "assistant", "content": [{"type": "output_text", "text": "Yes."}]},
               {"type": "message", "role": "user",
                "content": [{"type": "input_text", "text": "Is grass blue?"}]}])
    assert reply.status == "completed" and reply.instructions == "Answer yes or no, as JSON."
    assert json.loads(reply.output_text)["answer"] in ("yes", "no")


def test_running_out_of_output_tokens_is_an_incomplete_response(client: openai.OpenAI) -> None:
    reply = client.responses.create(model=MODEL, input="Tell me a long story.",
                                    max_output_tokens=4)
    assert reply.status == "incomplete" and reply.incomplete_details is not None
    assert reply.incomplete_details.reason == "max_output_tokens"
    assert reply.max_output_tokens == 4 and reply.output[0].status == "incomplete"


def test_the_stream_helper_collects_the_text_and_the_final_response(
        client: openai.OpenAI) -> None:
    with client.responses.stream(model=MODEL, input="Is the sky blue? Answer as JSON.",
                                 text={"format": YES_NO}) as stream:
        events = list(stream)
        final = stream.get_final_response()
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert final.status == "completed" and final.output_text == text
    assert json.loads(text)["answer"] in ("yes", "no")


def test_a_stream_out_of_tokens_ends_with_response_incomplete(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model=MODEL, input="Tell me a long story.",
                                          max_output_tokens=4, stream=True))
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.incomplete_details.reason == "max_output_tokens"


def test_a_structured_answer_parses_against_its_schema(client: openai.OpenAI) -> None:
    schema = {"type": "object", "required": ["colour"], "additionalProperties": False,
              "properties": {"colour": {"type": "string", "maxLength": 10}}}
    reply = client.responses.create(
        model=MODEL, input="Name a colour as JSON.", max_output_tokens=100,
        text={"format": {"type": "json_schema", "name": "colour", "schema": schema}})
    assert set(json.loads(reply.output_text)) == {"colour"}
    assert reply.text is not None and reply.text.format.type == "json_schema"


def test_a_function_call_goes_round_trip(client: openai.OpenAI, tool_model: str) -> None:
    # The demo model rarely calls a tool by itself: tool_choice "required" holds it to a call.
    ask = {"role": "user", "content": "What is the weather in Paris?"}
    reply = client.responses.create(model=tool_model, input=[ask], tools=[WEATHER],
                                    tool_choice="required", max_output_tokens=60,
                                    temperature=0)
    [call] = reply.output
    assert call.type == "function_call" and call.name == "get_weather" and call.call_id
    assert isinstance(json.loads(call.arguments)["city"], str)
    assert reply.tools[0].name == "get_weather" and reply.tool_choice == "required"
    followup = client.responses.create(
        model=tool_model, tools=[WEATHER], max_output_tokens=4, temperature=0,
        input=[ask, call.to_dict(),
               {"type": "function_call_output", "call_id": call.call_id,
                "output": "18 degrees and sunny"}])
    assert followup.output[-1].type == "message"


def test_a_named_tool_choice_calls_that_tool(client: openai.OpenAI, tool_model: str) -> None:
    clock = {"type": "function", "name": "get_time", "description": "The time in a city",
             "parameters": WEATHER["parameters"]}
    reply = client.responses.create(
        model=tool_model, input="What is the weather in Paris?", tools=[WEATHER, clock],
        tool_choice={"type": "function", "name": "get_time"}, max_output_tokens=60,
        temperature=0)
    assert [(item.type, item.name) for item in reply.output] == [("function_call", "get_time")]


def test_a_streamed_function_call_is_one_item_with_its_arguments(client: openai.OpenAI,
                                                                 tool_model: str) -> None:
    with client.responses.stream(model=tool_model, input="What is the weather in Paris?",
                                 tools=[WEATHER], tool_choice="required",
                                 max_output_tokens=60, temperature=0) as stream:
        events = list(stream)
        final = stream.get_final_response()
    [done] = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert final.output[0].type == "function_call"
    assert final.output[0].arguments == done.arguments


def test_thinking_comes_back_as_a_reasoning_item(client: openai.OpenAI, thinker: str) -> None:
    reply = client.responses.create(model=thinker, input="Why is the sky blue?",
                                    reasoning={"effort": "low"}, max_output_tokens=12,
                                    temperature=0)
    reasoning = reply.output[0]
    assert reasoning.type == "reasoning" and reasoning.summary[0].text
    assert reply.reasoning is not None and reply.reasoning.effort == "low"


def test_streamed_thinking_is_reasoning_summary_text(client: openai.OpenAI, thinker: str) -> None:
    with client.responses.stream(model=thinker, input="Why is the sky blue?",
                                 reasoning={"effort": "low"}, max_output_tokens=12,
                                 temperature=0) as stream:
        events = list(stream)
    thought = "".join(e.delta for e in events if e.type == "response.reasoning_summary_text.delta")
    [done] = [e for e in events if e.type == "response.reasoning_summary_text.done"]
    assert thought and done.text == thought
    assert events[-1].response.output[0].summary[0].text == thought


def test_what_codex_sends_streams(client: openai.OpenAI) -> None:
    events = list(client.responses.create(
        model=MODEL, instructions="You are a coding agent.", input="Say hi.", stream=True,
        store=False, include=["reasoning.encrypted_content"], parallel_tool_calls=False,
        tool_choice="auto", prompt_cache_key="session-1", max_output_tokens=6))
    assert events[0].type == "response.created" and events[-1].response.store is False


@pytest.mark.parametrize(("fields", "message"), [
    ({"extra_body": {"max_tool_calls": 3}}, '"max_tool_calls" is not supported'),
    ({"previous_response_id": "resp_1"}, "previous_response_id is not supported"),
    ({"store": True}, "store: true is not supported: responses are not stored"),
    ({"input": [{"role": "user", "content": [
        {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}"}]}]},
     f'"{MODEL}" does not support images'),
    ({"reasoning": {"effort": "high"}}, f'"{MODEL}" does not support thinking'),
])
def test_what_corral_cannot_do_is_a_400_naming_it(client: openai.OpenAI, fields: dict,
                                                  message: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(**{"model": MODEL, "input": "Hi", **fields})
    assert message in info.value.message and info.value.body["type"] == "invalid_request_error"


async def test_the_async_client_reads_a_response(server: Server) -> None:
    client = openai.AsyncOpenAI(base_url=f"http://{server.base}/v1", api_key="unused",
                                max_retries=0, _strict_response_validation=True)
    reply = await client.responses.create(model=MODEL, input="Hi", max_output_tokens=4)
    assert reply.output_text

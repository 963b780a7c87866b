"""POST /v1/messages in process: Anthropic requests translated into the native chat (what the
scheduler is handed), and the native answer translated back into Anthropic's message and stream
events, each checked against the `anthropic` SDK's own types. The scheduler is scripted: it
records each submission and answers with the worker messages a test gives it."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Awaitable, Callable

import orjson
import pytest
from aiohttp.test_utils import TestClient
from anthropic.types import Message, RawMessageStreamEvent
from pydantic import TypeAdapter

from scheduler.job import Job
from server.app import build_app
from server.settings import load as load_settings
from store.store import Store
from tests.e2e.test_tools_thinking import THINK_TEMPLATE, TOOL_TEMPLATE
from tests.gguf_files import one_block_model
from tests.images import png
from tests.unit.test_openapi import DummyScheduler, make_app, schema
from tests.unit.test_token_path import FakeWorker
from workers import protocol

Client = Callable[..., Awaitable[TestClient]]
EVENT = TypeAdapter(RawMessageStreamEvent)
ASK = [{"role": "user", "content": "Weather in Paris?"}]
WEATHER = {"name": "get_weather", "description": "The weather in a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                            "required": ["city"]}}
TIME = {"name": "get_time", "input_schema": {"type": "object",
                                            "properties": {"zone": {"type": "string"}}}}
CALL_TEXT = '{"name": "get_weather", "arguments": {"city": "Paris"}}'


def said(*texts: str, reason: str = "stop", prompt: int = 7) -> list[Any]:
    """What a worker sends for an answer of these chunks."""
    return [protocol.Started(1, prompt, False), *(protocol.Chunk(1, t, 1) for t in texts),
            protocol.Done(1, reason, prompt, 1, len(texts), 1)]


class ScriptedScheduler(DummyScheduler):
    def __init__(self) -> None:
        self.script = said("Hello", " there")
        self.submitted: list[dict[str, Any]] = []

    async def submit(self, ref: Any, load: Any, keep_alive: float | None, prompt: Any,
                     options: Any, want_context: bool, output_format: Any = None,
                     **rest: Any) -> Job[protocol.Done]:
        self.submitted.append({"prompt": prompt, "options": options, "format": output_format,
                               "format_prefix": rest.get("format_prefix", "")})
        queue: asyncio.Queue[Any] = asyncio.Queue()
        for msg in self.script:
            queue.put_nowait(msg)
        runner: Any = SimpleNamespace(worker=FakeWorker())
        return Job(1, runner, ref.name, 0, protocol.Done, queue, lambda job: None)


@dataclass
class Served:
    client: TestClient
    scheduler: ScriptedScheduler

    async def post(self, **body: Any) -> tuple[int, Any]:
        body = {"model": "plain", "max_tokens": 16, "messages": ASK, **body}
        resp = await self.client.post("/v1/messages", json=body)
        raw = await resp.read()
        if resp.content_type == "text/event-stream":
            return resp.status, sse(raw)
        return resp.status, orjson.loads(raw)

    @property
    def native(self) -> dict[str, Any]:
        """What the scheduler was handed last."""
        return self.scheduler.submitted[-1]


def sse(raw: bytes) -> list[dict[str, Any]]:
    """The events of a stream, each checked to be `event: <its type>` then `data: <it>`."""
    events = []
    for frame in raw.decode().split("\n\n")[:-1]:
        name, data = frame.split("\n")
        event = orjson.loads(data.removeprefix("data: "))
        assert name == f"event: {event['type']}"
        events.append(event)
    return events


async def scripted_app(aiohttp_client: Client, tmp_path: Path,
                       models: dict[str, dict[str, Any]]) -> tuple[TestClient, ScriptedScheduler]:
    """The app over a scripted scheduler, with each model created from a tiny GGUF and the
    create fields given."""
    scheduler = ScriptedScheduler()
    app = build_app(load_settings({}), Store(tmp_path / "models"),
                    scheduler)  # type: ignore[arg-type]
    client = await aiohttp_client(app)
    weights = one_block_model()
    digest = "sha256:" + hashlib.sha256(weights).hexdigest()
    assert (await client.post(f"/api/blobs/{digest}", data=weights)).status == 201
    for name, fields in models.items():
        resp = await client.post("/api/create", json={"model": name, "files": {"m.gguf": digest},
                                                      "stream": False, **fields})
        assert resp.status == 200, await resp.text()
    return client, scheduler


@pytest.fixture
async def served(aiohttp_client: Client, tmp_path: Path) -> Served:
    return Served(*await scripted_app(aiohttp_client, tmp_path, {
        "plain": {}, "toolbox": {"template": TOOL_TEMPLATE},
        "thinker": {"template": THINK_TEMPLATE}}))


# ---- the request, as the native chat ------------------------------------------------------------

async def test_the_system_prompt_is_the_first_native_message(served: Served) -> None:
    assert (await served.post(system="Be brief."))[0] == 200
    assert served.native["prompt"]["messages"] == [{"role": "system", "content": "Be brief."},
                                                   {"role": "user", "content": "Weather in Paris?"}]


async def test_system_text_blocks_are_joined_without_claude_codes_billing_line(
        served: Served) -> None:
    system = [{"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.7; cch=4f2a1;"},
              {"type": "text", "text": "You are Claude Code. ",
               "cache_control": {"type": "ephemeral"}},
              {"type": "text", "text": "Be brief."}]
    assert (await served.post(system=system))[0] == 200
    assert served.native["prompt"]["messages"][0] == {
        "role": "system", "content": "You are Claude Code. Be brief."}


async def test_max_tokens_and_the_sampling_fields_become_native_options(served: Served) -> None:
    assert (await served.post(max_tokens=5, temperature=0.5, top_p=0.9, top_k=20,
                              stop_sequences=["END"]))[0] == 200
    options = served.native["options"]
    assert (options["num_predict"], options["temperature"], options["top_p"], options["top_k"],
            options["stop"]) == (5, 0.5, 0.9, 20, ["END"])


async def test_a_missing_max_tokens_is_a_400_in_anthropics_error_shape(served: Served) -> None:
    status, body = await served.post(max_tokens=None)
    assert (status, body) == (400, {"type": "error", "error": {
        "type": "invalid_request_error", "message": "max_tokens: Field required"}})


@pytest.mark.parametrize("field", ["container", "mcp_servers", "n"])
async def test_a_field_corral_does_not_implement_is_a_400_naming_it(served: Served,
                                                                    field: str) -> None:
    status, body = await served.post(**{field: {"id": "x"}})
    assert status == 400 and body["error"]["message"] == f"{field}: not supported"
    assert served.scheduler.submitted == []


@pytest.mark.parametrize(("field", "value", "message"), [
    ("messages", [{"role": "robot", "content": "hi"}],
     'messages[0].role: must be "user" or "assistant"'),
    ("messages", [{"role": "assistant", "content": [
        {"type": "tool_use", "id": "t", "name": "f", "input": "{}"}]}],
     "messages[0].content[0].input: must be an object"),
    ("messages", [{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f",
                                                "input": {}}]}],
     'messages[0].content[0].type: "tool_use" blocks are not supported in user messages'),
    ("messages", [], "messages: at least one message is required"),
    ("thinking", {"type": ["enabled"]},
     'thinking.type: must be "enabled", "adaptive" or "disabled"'),
    ("tool_choice", {"type": "required"},
     'tool_choice.type: must be "auto", "any", "tool" or "none"'),
    ("tool_choice", {"name": "get_weather"},
     'tool_choice.type: must be "auto", "any", "tool" or "none"'),
    ("tool_choice", {"type": "none", "disable_parallel_tool_use": True},
     "tool_choice.disable_parallel_tool_use: not supported"),
    ("tool_choice", {"type": "auto", "disable_parallel_tool_use": "yes"},
     "tool_choice.disable_parallel_tool_use: must be a boolean"),
    ("thinking", {"type": "enabled"}, "thinking.budget_tokens: must be an integer"),
    ("tools", [{**WEATHER, "strict": True}], "tools[0].strict: not supported"),
    ("messages", [{"role": "user", "content": [{"type": "text", "text": "hi",
                                                "citations": [{"type": "char_location"}]}]}],
     "messages[0].content[0].citations: not supported"),
    ("output_config", {"effort": "huge"},
     'output_config.effort: must be "low", "medium", "high", "xhigh" or "max"'),
    ("stop_sequences", "END", "stop_sequences: must be a list of strings"),
    ("max_tokens", 0, "max_tokens: must be a positive integer"),
])
async def test_a_malformed_field_is_a_400_naming_it(served: Served, field: str, value: Any,
                                                    message: str) -> None:
    status, body = await served.post(**{field: value})
    assert (status, body["error"]) == (400, {"type": "invalid_request_error", "message": message})


async def test_fields_without_effect_are_accepted(served: Served) -> None:
    status, _ = await served.post(
        metadata={"user_id": "u1"}, cache_control={"type": "ephemeral"}, service_tier="auto",
        inference_geo="eu", speed="standard", context_management={"edits": []})
    assert status == 200


async def test_tool_use_and_tool_result_blocks_become_a_native_call_and_a_tool_message(
        served: Served) -> None:
    history = ASK + [
        {"role": "assistant", "content": [
            {"type": "text", "text": "Let me look."},
            {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
             "input": {"city": "Paris"}}]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_1",
             "content": [{"type": "text", "text": "18 degrees"}], "is_error": False},
            {"type": "text", "text": "And Lyon?"}]}]
    assert (await served.post(model="toolbox", messages=history, tools=[WEATHER]))[0] == 200
    assert served.native["prompt"]["messages"][1:] == [
        {"role": "assistant", "content": "Let me look.", "tool_calls": [
            {"id": "toolu_1", "function": {"name": "get_weather",
                                           "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "18 degrees", "tool_call_id": "toolu_1",
         "tool_name": "get_weather"},
        {"role": "user", "content": "And Lyon?"}]


async def test_tools_become_native_function_tools(served: Served) -> None:
    assert (await served.post(model="toolbox", tools=[WEATHER]))[0] == 200
    assert served.native["prompt"]["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "parameters": WEATHER["input_schema"],
        "description": "The weather in a city"}}]


async def test_tool_choice_none_offers_no_tools(served: Served) -> None:
    assert (await served.post(model="toolbox", tools=[WEATHER],
                              tool_choice={"type": "none"}))[0] == 200
    assert served.native["prompt"]["tools"] == []


def call_of(*tools: dict[str, Any]) -> dict[str, Any]:
    """The schema a forced call of one of these tools is held to (server/toolchoice.py)."""
    shapes = [{"type": "object", "required": ["name", "arguments"], "properties": {
        "name": {"const": tool["name"]}, "arguments": tool["input_schema"]}} for tool in tools]
    return shapes[0] if len(shapes) == 1 else {"anyOf": shapes}


async def test_tool_choice_auto_leaves_the_answer_free(served: Served) -> None:
    assert (await served.post(model="toolbox", tools=[WEATHER, TIME],
                              tool_choice={"type": "auto"}))[0] == 200
    assert served.native["format"] is None


async def test_tool_choice_any_holds_the_answer_to_a_call_of_one_of_the_tools(
        served: Served) -> None:
    assert (await served.post(model="toolbox", tools=[WEATHER, TIME],
                              tool_choice={"type": "any"}))[0] == 200
    assert served.native["format"] == call_of(WEATHER, TIME)
    assert served.native["format_prefix"] == ""  # the template's calls open with no tag


async def test_tool_choice_tool_holds_the_answer_to_a_call_of_that_tool(served: Served) -> None:
    assert (await served.post(model="toolbox", tools=[WEATHER, TIME],
                              tool_choice={"type": "tool", "name": "get_time"}))[0] == 200
    assert served.native["format"] == call_of(TIME)


async def test_tool_choice_naming_a_tool_not_offered_is_a_400(served: Served) -> None:
    status, body = await served.post(model="toolbox", tools=[WEATHER],
                                     tool_choice={"type": "tool", "name": "get_time"})
    assert status == 400
    assert body["error"]["message"] == 'tool_choice names "get_time", which is not among the tools'


async def test_tool_choice_any_without_tools_is_a_400(served: Served) -> None:
    status, body = await served.post(model="toolbox", tool_choice={"type": "any"})
    assert (status, body["error"]["message"]) == (
        400, "tool_choice requires a tool call, but no tools were given")
    assert served.scheduler.submitted == []


async def test_a_forced_call_with_an_output_format_is_a_400(served: Served) -> None:
    status, body = await served.post(
        model="toolbox", tools=[WEATHER], tool_choice={"type": "any"},
        output_config={"format": {"type": "json_schema", "schema": {"type": "object"}}})
    assert (status, body["error"]["message"]) == (
        400, "a response format and a forced tool call cannot be combined")


async def test_a_server_tool_is_a_400_naming_it(served: Served) -> None:
    status, body = await served.post(tools=[{"type": "web_search_20250305", "name": "web_search"}])
    assert status == 400
    assert body["error"]["message"] == ('tools[0].type: server tool "web_search_20250305" is not '
                                        "supported")


async def test_an_image_block_reaches_the_model_as_an_image(served: Served) -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": base64.b64encode(png()).decode()}}
    status, body = await served.post(messages=[{"role": "user", "content": [image]}])
    assert status == 400 and body["error"]["message"].endswith("does not support images")


async def test_an_image_url_source_is_refused_as_ollama_refuses_image_urls(
        served: Served) -> None:
    image = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    status, body = await served.post(messages=[{"role": "user", "content": [image]}])
    assert status == 400 and body["error"]["message"] == (
        "messages[0].content[0].source: image URLs are not currently supported, please use "
        "base64 encoded data instead")


@pytest.mark.parametrize(("thinking", "output_config", "think"), [
    ({"type": "enabled", "budget_tokens": 1024}, None, True),
    ({"type": "disabled"}, None, False),
    ({"type": "adaptive"}, None, True),  # the model's default: one that can think does
    ({"type": "adaptive"}, {"effort": "low"}, "low"),
    (None, {"effort": "xhigh"}, "high"),
])
async def test_thinking_and_effort_become_the_native_think(
        served: Served, thinking: Any, output_config: Any, think: Any) -> None:
    assert (await served.post(model="thinker", thinking=thinking,
                              output_config=output_config))[0] == 200
    assert served.native["prompt"]["think"] == think


async def test_thinking_on_a_model_that_cannot_think_is_dropped_not_refused(
        served: Served) -> None:
    assert (await served.post(thinking={"type": "enabled", "budget_tokens": 1024}))[0] == 200
    assert served.native["prompt"]["think"] is None


async def test_an_output_format_becomes_the_native_format(served: Served) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    assert (await served.post(output_config={"format": {"type": "json_schema",
                                                        "schema": schema}}))[0] == 200
    assert served.native["format"] == schema


# ---- the answer, as a message -------------------------------------------------------------------

async def test_an_answer_is_a_message_with_its_text_and_usage(served: Served) -> None:
    status, body = await served.post()
    assert status == 200
    Message.model_validate(body)
    assert body["id"].startswith("msg_") and body["model"] == "plain"
    assert body["content"] == [{"type": "text", "text": "Hello there"}]
    assert (body["stop_reason"], body["stop_sequence"]) == ("end_turn", None)
    assert body["usage"] == {"input_tokens": 7, "output_tokens": 2}


async def test_a_requested_stop_sequence_is_named_with_stop_reason_stop_sequence(
        served: Served) -> None:
    served.scheduler.script = said("Hello")
    served.scheduler.script[-1].stop = "END"
    body = (await served.post(stop_sequences=["END"]))[1]
    assert (body["stop_reason"], body["stop_sequence"]) == ("stop_sequence", "END")


async def test_a_models_own_stop_string_ends_the_turn(served: Served) -> None:
    served.scheduler.script = said("Hello")
    served.scheduler.script[-1].stop = "<end_of_turn>"
    body = (await served.post(stop_sequences=["END"]))[1]
    assert (body["stop_reason"], body["stop_sequence"]) == ("end_turn", None)


async def test_the_length_limit_is_stop_reason_max_tokens(served: Served) -> None:
    served.scheduler.script = said("Hello", reason="length")
    assert (await served.post())[1]["stop_reason"] == "max_tokens"


async def test_thinking_is_the_first_block_with_an_empty_signature(served: Served) -> None:
    served.scheduler.script = said("<think>Paris is", " in France.</think>", "Sunny.")
    body = (await served.post(model="thinker", thinking={"type": "enabled",
                                                         "budget_tokens": 1024}))[1]
    Message.model_validate(body)
    assert body["content"] == [
        {"type": "thinking", "thinking": "Paris is in France.", "signature": ""},
        {"type": "text", "text": "Sunny."}]


async def test_display_omitted_sends_no_thinking(served: Served) -> None:
    served.scheduler.script = said("<think>Paris.</think>", "Sunny.")
    body = (await served.post(model="thinker", thinking={"type": "enabled", "budget_tokens": 1024,
                                                         "display": "omitted"}))[1]
    assert body["content"] == [{"type": "text", "text": "Sunny."}]


async def test_a_tool_call_is_a_tool_use_block_and_stop_reason_tool_use(served: Served) -> None:
    served.scheduler.script = said(CALL_TEXT)
    body = (await served.post(model="toolbox", tools=[WEATHER]))[1]
    Message.model_validate(body)
    [block] = body["content"]
    assert block["type"] == "tool_use" and block["id"].startswith("toolu_")
    assert (block["name"], block["input"]) == ("get_weather", {"city": "Paris"})
    assert body["stop_reason"] == "tool_use"


async def test_an_unknown_model_is_a_404_not_found_error(served: Served) -> None:
    status, body = await served.post(model="nope")
    assert status == 404 and body["type"] == "error"
    assert body["error"]["type"] == "not_found_error"


# ---- the answer, as stream events ---------------------------------------------------------------

async def test_a_stream_is_message_start_a_text_block_message_delta_and_message_stop(
        served: Served) -> None:
    status, events = await served.post(stream=True)
    assert status == 200
    for event in events:
        EVENT.validate_python(event)
    start = events[0]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"] == {"input_tokens": 7, "output_tokens": 0}
    assert events[1:] == [
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta",
                                                              "text": "Hello"}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta",
                                                              "text": " there"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None},
         "usage": {"input_tokens": 7, "output_tokens": 2}},
        {"type": "message_stop"}]


async def test_a_thinking_block_gets_its_signature_before_it_closes_and_the_text_follows(
        served: Served) -> None:
    served.scheduler.script = said("<think>Hm.</think>", "Sunny.")
    events = (await served.post(model="thinker", stream=True,
                                thinking={"type": "enabled", "budget_tokens": 1024}))[1]
    for event in events:
        EVENT.validate_python(event)
    assert [(e["type"], e.get("index"), e.get("delta", {}).get("type")) for e in events] == [
        ("message_start", None, None),
        ("content_block_start", 0, None), ("content_block_delta", 0, "thinking_delta"),
        ("content_block_delta", 0, "signature_delta"), ("content_block_stop", 0, None),
        ("content_block_start", 1, None), ("content_block_delta", 1, "text_delta"),
        ("content_block_stop", 1, None), ("message_delta", None, None),
        ("message_stop", None, None)]
    assert events[1]["content_block"] == {"type": "thinking", "thinking": "", "signature": ""}


async def test_a_streamed_tool_call_is_a_block_of_its_own_with_its_whole_input_in_one_delta(
        served: Served) -> None:
    served.scheduler.script = said('{"name": "get_weather", ', '"arguments": {"city": "Paris"}}')
    events = (await served.post(model="toolbox", tools=[WEATHER], stream=True))[1]
    for event in events:
        EVENT.validate_python(event)
    start, delta, stop = events[1:4]
    assert start["index"] == delta["index"] == stop["index"] == 0
    assert start["content_block"]["input"] == {} and start["content_block"]["name"] == "get_weather"
    assert orjson.loads(delta["delta"]["partial_json"]) == {"city": "Paris"}
    assert events[4]["delta"]["stop_reason"] == "tool_use"


async def test_a_failure_mid_stream_is_an_error_event(served: Served) -> None:
    served.scheduler.script = [protocol.Started(1, 7, False), protocol.Chunk(1, "Hel", 1),
                               protocol.Failed(1, "the worker stopped")]
    status, events = await served.post(stream=True)
    assert status == 200 and [e["type"] for e in events][-1] == "error"
    assert events[-1] == {"type": "error", "error": {"type": "api_error",
                                                     "message": "the worker stopped"}}



# ---- disable_parallel_tool_use, the error shape outside the handler, the OpenAPI document -------

TWO_CALLS = CALL_TEXT + '{"name": "get_time", "arguments": {"zone": "CET"}}'


async def test_parallel_calls_come_back_as_one_tool_use_block_each(served: Served) -> None:
    served.scheduler.script = said(TWO_CALLS)
    body = (await served.post(model="toolbox", tools=[WEATHER, TIME]))[1]
    assert [block["name"] for block in body["content"]] == ["get_weather", "get_time"]


async def test_disable_parallel_tool_use_keeps_only_the_first_call(served: Served) -> None:
    served.scheduler.script = said(TWO_CALLS)
    body = (await served.post(model="toolbox", tools=[WEATHER, TIME], tool_choice={
        "type": "auto", "disable_parallel_tool_use": True}))[1]
    assert [block["name"] for block in body["content"]] == ["get_weather"]
    assert body["stop_reason"] == "tool_use"


async def test_disable_parallel_tool_use_streams_only_the_first_call(served: Served) -> None:
    served.scheduler.script = said(CALL_TEXT, '{"name": "get_time", "arguments": {}}')
    events = (await served.post(model="toolbox", tools=[WEATHER, TIME], stream=True,
                                tool_choice={"type": "auto", "disable_parallel_tool_use": True}))[1]
    assert [e["content_block"]["name"] for e in events if e["type"] == "content_block_start"] \
        == ["get_weather"]


async def test_a_missing_api_key_is_an_authentication_error(aiohttp_client: Client,
                                                            tmp_path: Path) -> None:
    client = await aiohttp_client(make_app(tmp_path, CORRAL_API_KEY="secret"))
    resp = await client.post("/v1/messages", json={"model": "m", "max_tokens": 1,
                                                   "messages": ASK})
    assert resp.status == 401
    assert await resp.json() == {"type": "error", "error": {"type": "authentication_error",
                                                            "message": "unauthorized"}}


# Answers with every kind of block: thinking then text, and text then a tool call.
ANSWERS = [("thinker", said("<think>Hm.</think>", "Sunny."),
            {"thinking": {"type": "enabled", "budget_tokens": 1024}}),
           ("toolbox", said("Let me look.", CALL_TEXT, reason="length"), {"tools": [WEATHER]})]


@pytest.mark.parametrize(("model", "script", "fields"), ANSWERS, ids=["thinking", "tool_use"])
async def test_a_message_matches_the_openapi_document(served: Served, model: str,
                                                      script: list[Any],
                                                      fields: dict[str, Any]) -> None:
    served.scheduler.script = script
    status, body = await served.post(model=model, **fields)
    assert status == 200
    schema("AnthropicMessage").validate(body)


@pytest.mark.parametrize(("model", "script", "fields"), ANSWERS, ids=["thinking", "tool_use"])
async def test_stream_events_match_the_openapi_document(served: Served, model: str,
                                                        script: list[Any],
                                                        fields: dict[str, Any]) -> None:
    served.scheduler.script = script
    status, events = await served.post(model=model, stream=True, **fields)
    assert status == 200
    for event in events:
        schema("AnthropicStreamEvent").validate(event)


async def test_a_failure_event_matches_the_openapi_document(served: Served) -> None:
    served.scheduler.script = [protocol.Started(1, 7, False), protocol.Chunk(1, "Hel", 1),
                               protocol.Failed(1, "the worker stopped")]
    events = (await served.post(stream=True))[1]
    schema("AnthropicStreamEvent").validate(events[-1])

"""POST /v1/responses (server/openai/responses*.py): the request as a native chat request, the
model's parts as OpenAI's output items and stream events (checked against the `openai`
package's own types and server/openapi.yaml), and the endpoint in process, with a scheduler
whose jobs say what a test wants (the official client drives it where it can)."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Awaitable, Callable

import openai
import orjson
import pytest
from aiohttp.test_utils import TestClient
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from scheduler.job import Job
from scheduler.snapshot import Snapshot
from server import errors
from server.answer import Parts
from server.app import build_app
from server.openai.responses_output import Output
from server.openai.responses_request import NO_EFFECT, parse_request
from server.settings import load as load_settings
from server.toolchoice import ForcedCall
from store.store import Store
from tests.e2e.test_tools_thinking import THINK_TEMPLATE, TOOL_TEMPLATE
from tests.gguf_files import one_block_model
from tests.unit.test_openapi import schema
from workers import protocol

Client = Callable[..., Awaitable[TestClient]]
EVENT = TypeAdapter(ResponseStreamEvent)
DOCUMENTED_EVENT = schema("ResponsesStreamEvent")
WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"]}}


def request(**fields: Any) -> dict[str, Any]:
    return {"model": "m", "input": "Hi", **fields}


def refused(body: dict[str, Any]) -> str:
    with pytest.raises(errors.BadRequest) as info:
        parse_request(body)
    return info.value.message


# ---- the request as a native chat ---------------------------------------------------------------

def test_a_string_input_is_one_user_message() -> None:
    assert parse_request(request()).chat.messages == [{"role": "user", "content": "Hi"}]


def test_instructions_come_first_as_the_system_message() -> None:
    chat = parse_request(request(instructions="Be brief.")).chat
    assert chat.messages[0] == {"role": "system", "content": "Be brief."}


def test_message_items_take_their_text_parts_and_developer_is_system() -> None:
    chat = parse_request(request(input=[
        {"role": "developer", "content": "Rules."},
        {"type": "message", "role": "user", "content": [
            {"type": "input_text", "text": "Hello "}, {"type": "input_text", "text": "there"}]},
        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
         "content": [{"type": "output_text", "text": "Hi!", "annotations": [], "logprobs": []}]},
    ])).chat
    assert chat.messages == [{"role": "system", "content": "Rules."},
                             {"role": "user", "content": "Hello there"},
                             {"role": "assistant", "content": "Hi!"}]


def test_a_function_call_and_its_output_are_the_assistants_call_and_a_tool_message() -> None:
    chat = parse_request(request(tools=[WEATHER], input=[
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": "call_1", "name": "get_weather",
         "arguments": '{"city": "Paris"}', "id": "fc_1", "status": "completed"},
        {"type": "function_call_output", "call_id": "call_1", "output": "18 degrees"},
    ])).chat
    assert chat.messages[1:] == [
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "call_1", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
        {"role": "tool", "content": "18 degrees", "tool_call_id": "call_1",
         "tool_name": "get_weather"}]


def test_a_function_call_after_text_joins_that_assistant_turn() -> None:
    chat = parse_request(request(input=[
        {"role": "assistant", "content": "Let me look."},
        {"type": "function_call", "call_id": "c", "name": "f", "arguments": "{}"}])).chat
    assert chat.messages == [{"role": "assistant", "content": "Let me look.", "tool_calls": [
        {"id": "c", "function": {"name": "f", "arguments": {}}}]}]


def test_a_reasoning_item_is_the_thinking_of_the_assistant_turn_after_it() -> None:
    chat = parse_request(request(input=[
        {"role": "user", "content": "Hi"},
        {"type": "reasoning", "id": "rs_1", "summary": [],
         "content": [{"type": "reasoning_text", "text": "A greeting."}]},
        {"role": "assistant", "content": "Hello!"}])).chat
    assert chat.messages[1] == {"role": "assistant", "content": "Hello!",
                                "thinking": "A greeting."}


def test_a_reasoning_item_corral_gave_back_is_the_thinking_of_its_turn() -> None:
    _, out = played(Parts(thinking="Greet back."), Parts(content="Hello!"))
    given_back = out.response("completed")["output"]
    chat = parse_request(request(input=[{"role": "user", "content": "Hi"}, *given_back,
                                        {"role": "user", "content": "And?"}])).chat
    assert chat.messages[1] == {"role": "assistant", "content": "Hello!",
                                "thinking": "Greet back."}


def test_function_tools_become_native_tools() -> None:
    assert parse_request(request(tools=[{**WEATHER, "strict": True}])).chat.tools == [
        {"type": "function", "function": {k: WEATHER[k]
                                          for k in ("name", "description", "parameters")}}]


def test_tool_choice_none_runs_without_the_tools_and_says_so() -> None:
    parsed = parse_request(request(tools=[WEATHER], tool_choice="none"))
    assert parsed.chat.tools == [] and parsed.echo["tool_choice"] == "none"
    assert parsed.echo["tools"] == [WEATHER]


def test_tool_choice_auto_leaves_the_call_to_the_model() -> None:
    assert parse_request(request(tools=[WEATHER])).call is None
    assert parse_request(request(tools=[WEATHER], tool_choice="auto")).call is None


def test_tool_choice_required_holds_the_answer_to_a_call_of_any_tool() -> None:
    parsed = parse_request(request(tools=[WEATHER, {**WEATHER, "name": "get_time"}],
                                   tool_choice="required"))
    assert parsed.call == ForcedCall(("get_weather", "get_time"))
    assert parsed.echo["tool_choice"] == "required"


def test_a_named_tool_choice_holds_the_answer_to_a_call_of_that_tool() -> None:
    parsed = parse_request(request(tools=[WEATHER, {**WEATHER, "name": "get_time"}],
                                   tool_choice={"type": "function", "name": "get_time"}))
    assert parsed.call == ForcedCall(("get_time",))
    assert parsed.echo["tool_choice"] == {"type": "function", "name": "get_time"}


@pytest.mark.parametrize(("fields", "message"), [
    ({"tool_choice": "required"}, "no tools were given"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "name": "get_time"}},
     'tool_choice names "get_time", which is not among the tools'),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
     "tool_choice must be"),
    ({"tools": [WEATHER], "tool_choice": "any"}, "tool_choice must be"),
])
def test_a_tool_choice_that_cannot_be_held_to_is_refused(fields: dict[str, Any],
                                                         message: str) -> None:
    assert message in refused(request(**fields))


@pytest.mark.parametrize(("effort", "think"), [
    ("none", False), ("minimal", "low"), ("low", "low"), ("medium", "medium"), ("high", "high"),
    ("xhigh", "max"), ("max", "max")])
def test_reasoning_effort_is_the_native_think(effort: str, think: bool | str) -> None:
    parsed = parse_request(request(reasoning={"effort": effort, "summary": "auto"}))
    assert parsed.chat.think == think
    assert parsed.echo["reasoning"] == {"effort": effort, "summary": "auto"}


def test_an_unknown_reasoning_effort_is_refused_with_ollamas_message() -> None:
    assert refused(request(reasoning={"effort": "huge"})).startswith(
        'invalid reasoning value: "huge"')


@pytest.mark.parametrize(("text_format", "native"), [
    ({"type": "text"}, None), ({"type": "json_object"}, "json"),
    ({"type": "json_schema", "name": "colour", "strict": True,
      "schema": {"type": "object"}}, {"type": "object"})])
def test_text_format_is_the_native_format(text_format: dict[str, Any], native: Any) -> None:
    parsed = parse_request(request(text={"format": text_format}))
    assert parsed.chat.format == native and parsed.echo["text"] == {"format": text_format}


def test_sampling_fields_and_max_output_tokens_are_native_options() -> None:
    chat = parse_request(request(temperature=0.2, top_p=0.5, max_output_tokens=16)).chat
    assert chat.options == {"temperature": 0.2, "top_p": 0.5, "num_predict": 16}


@pytest.mark.parametrize("limit", [0, -1, 1.5, True])
def test_max_output_tokens_must_be_a_positive_integer(limit: Any) -> None:
    assert "max_output_tokens" in refused(request(max_output_tokens=limit))


def test_truncation_disabled_is_the_native_truncate_false() -> None:
    assert parse_request(request()).chat.truncate is True
    parsed = parse_request(request(truncation="disabled"))
    assert parsed.chat.truncate is False and parsed.echo["truncation"] == "disabled"


@pytest.mark.parametrize(("field", "value", "message"), [
    ("stream", "yes", '"stream" must be a boolean'),
    ("instructions", 3, '"instructions" must be a string'),
    ("metadata", {"k": 1}, "metadata values must be strings"),
    ("input", 3, "input must be a string or a list of items"),
    ("temperature", "hot", '"temperature" must be of type number'),
    ("truncation", "middle", 'truncation must be "auto" or "disabled"'),
    ("reasoning", {"summary": "verbose"}, 'reasoning.summary must be "auto"'),
])
def test_implemented_fields_take_only_their_type(field: str, value: Any, message: str) -> None:
    assert message in refused(request(**{field: value}))


@pytest.mark.parametrize(("field", "value", "named"), [
    ("previous_response_id", "resp_123", "previous_response_id"),
    ("conversation", {"id": "conv_1"}, "conversation"),
    ("prompt", {"id": "pmpt_1"}, "prompt"),
    ("store", True, "store: true"),
    ("background", True, "background: true"),
])
def test_what_asks_for_stored_state_is_refused_because_nothing_is_stored(
        field: str, value: Any, named: str) -> None:
    assert refused(request(**{field: value})) == (
        f"{named} is not supported: responses are not stored (corral serves /v1/responses "
        "stateless, as Ollama does); send the whole conversation as input")


def test_the_stateless_values_of_the_stateful_fields_are_taken() -> None:
    parsed = parse_request(request(store=False, background=False, previous_response_id=None))
    assert parsed.echo["store"] is False and parsed.echo["background"] is False


@pytest.mark.parametrize(("field", "value", "named"), [
    ("max_tool_calls", 3, '"max_tool_calls"'),
    ("prompt_cache_retention", "24h", '"prompt_cache_retention"'),
    ("text", {"verbosity": "low"}, '"text.verbosity"'),
    ("reasoning", {"effort": "low", "budget": 3}, '"reasoning.budget"'),
    ("stream_options", {"include_usage": True}, '"stream_options.include_usage"'),
    ("tools", [{**WEATHER, "defer_loading": True}], '"tools[0].defer_loading"'),
    ("input", [{"role": "user", "content": "x", "name": "bob"}], '"input[0].name"'),
])
def test_a_field_not_implemented_is_a_400_naming_it(field: str, value: Any, named: str) -> None:
    assert refused(request(**{field: value})) == f"{named} is not supported"


def test_a_null_field_counts_as_absent() -> None:
    parsed = parse_request(request(conversation=None, reasoning=None, max_tool_calls=None,
                                   previous_response_id=None, text=None, tools=None))
    assert parsed.chat.messages == [{"role": "user", "content": "Hi"}]


def test_what_codex_sends_is_accepted() -> None:
    codex = {"model": "m", "instructions": "You are Codex.", "stream": True, "store": False,
             "input": [{"type": "message", "role": "user",
                        "content": [{"type": "input_text", "text": "ls"}]}],
             "tools": [WEATHER], "tool_choice": "auto", "parallel_tool_calls": False,
             "reasoning": None, "include": ["reasoning.encrypted_content"],
             "prompt_cache_key": "0198-session", "service_tier": "auto",
             "text": {"format": {"type": "json_schema", "strict": True, "name": "codex_output",
                                 "schema": {"type": "object"}}}}
    parsed = parse_request(codex)
    assert parsed.chat.stream is True and parsed.echo["parallel_tool_calls"] is False
    assert parsed.echo["store"] is False and parsed.echo["prompt_cache_key"] == "0198-session"


WITHOUT_EFFECT = {"metadata": {"k": "v"}, "include": ["reasoning.encrypted_content"],
                  "parallel_tool_calls": False, "top_logprobs": 0, "prompt_cache_key": "s-1",
                  "safety_identifier": "u-1", "user": "u-1", "service_tier": "flex",
                  "stream_options": {"include_obfuscation": True}}


def test_the_samples_cover_every_field_without_effect() -> None:
    assert set(WITHOUT_EFFECT) == set(NO_EFFECT)


@pytest.mark.parametrize("field", sorted(WITHOUT_EFFECT))
def test_a_field_without_effect_is_taken_and_runs_the_same_chat(field: str) -> None:
    assert parse_request(request(**{field: WITHOUT_EFFECT[field]})).chat == parse_request(
        request()).chat


@pytest.mark.parametrize(("field", "value", "message"), [
    ("include", ["message.output_text.logprobs"], "include value"),
    ("include", 5, '"include" must be'),
    ("top_logprobs", 5, "top_logprobs"),
    ("store", "yes", '"store" must be a boolean'),
    ("metadata", ["k"], '"metadata" must be'),
])
def test_fields_without_effect_take_only_what_they_can_honour(field: str, value: Any,
                                                              message: str) -> None:
    assert message in refused(request(**{field: value}))


@pytest.mark.parametrize(("part", "message"), [
    ({"type": "input_image", "image_url": "https://example.com/a.png"},
     "image URLs are not currently supported, please use base64 encoded data instead"),
    ({"type": "input_file", "file_id": "file-1"}, "file inputs are not supported"),
])
def test_image_and_file_parts_are_refused(part: dict[str, Any], message: str) -> None:
    assert refused(request(input=[{"role": "user", "content": [part]}])) == (
        f"input[0].content[0]: {message}")


@pytest.mark.parametrize(("tool", "message"), [
    ({"type": "web_search"}, 'tool type "web_search" is not supported'),
    ({"type": "function"}, "tools[0].name"),
    ({**WEATHER, "parameters": "x"}, "tools[0].parameters must be an object"),
])
def test_only_function_tools_with_a_name_are_taken(tool: dict[str, Any], message: str) -> None:
    assert message in refused(request(tools=[tool]))


def test_a_namespace_of_tools_becomes_its_members_named_within_it() -> None:
    # As Ollama's convertTools: Codex sends its MCP servers' tools as namespaces.
    crm = {"type": "namespace", "name": "crm", "description": "The CRM",
           "tools": [WEATHER, {**WEATHER, "name": "crm.lookup"}]}
    chat = parse_request(request(tools=[crm])).chat
    assert [t["function"]["name"] for t in chat.tools] == ["crm.get_weather", "crm.lookup"]
    assert chat.tools[0]["function"]["parameters"] == WEATHER["parameters"]


def test_a_namespaced_call_in_the_input_is_named_within_its_namespace() -> None:
    call = {"type": "function_call", "call_id": "c1", "namespace": "crm", "name": "get_weather",
            "arguments": '{"city": "Paris"}'}
    [message] = parse_request(request(input=[call])).chat.messages
    assert message["tool_calls"][0]["function"]["name"] == "crm.get_weather"


@pytest.mark.parametrize(("item", "message"), [
    ({"type": "item_reference", "id": "msg_1"}, 'unknown input item type "item_reference"'),
    ({"content": "no role"}, "needs a type or a role"),
    ({"role": "tool", "content": "x"}, 'invalid role "tool"'),
    ({"role": {"a": 1}, "content": "x"}, "invalid role"),
    ({"role": ["user"], "content": "x"}, "invalid role"),
    ({"type": "function_call", "call_id": "c", "name": "f", "arguments": "[1]"},
     "arguments must be a JSON object"),
    ({"type": "function_call_output", "output": "x"}, "needs call_id"),
])
def test_input_items_that_are_not_understood_are_refused(item: dict[str, Any],
                                                          message: str) -> None:
    assert message in refused(request(input=[item]))


def test_an_empty_input_is_refused() -> None:
    assert refused(request(input=[])) == "input must not be empty"


# ---- the model's parts as output items and events -----------------------------------------------

def done(reason: str = "stop") -> protocol.Done:
    return protocol.Done(1, reason, prompt_eval_count=7, prompt_eval_duration=1, eval_count=3,
                         eval_duration=1, prompt_cached=4)


def output() -> Output:
    return Output({"id": "resp_1", "object": "response", "created_at": 1, "model": "m",
                   **parse_request(request()).echo, "temperature": 0.8, "top_p": 0.9})


def played(*parts: Parts, reason: str = "stop") -> tuple[list[dict[str, Any]], Output]:
    out = output()
    events = [event for p in parts for event in out.feed(p)] + out.finish(done(reason))
    for event in events:
        EVENT.validate_python(event)  # the SDK's own types, every field they require
        DOCUMENTED_EVENT.validate(event)  # and what server/openapi.yaml says
    return events, out


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return [event["type"] for event in events]


def test_text_streams_as_one_message_item_in_openais_event_order() -> None:
    events, _ = played(Parts(content="Hel"), Parts(content="lo"))
    assert kinds(events) == [
        "response.created", "response.in_progress", "response.output_item.added",
        "response.content_part.added", "response.output_text.delta", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.completed"]
    assert [event["sequence_number"] for event in events] == list(range(len(events)))
    assert events[-4]["text"] == "Hello"


def test_the_first_events_carry_the_response_in_progress_with_no_output() -> None:
    events, _ = played(Parts(content="Hi"))
    for event in events[:2]:
        assert event["response"]["status"] == "in_progress" and event["response"]["output"] == []
        assert event["response"]["usage"] is None


def test_thinking_is_a_reasoning_item_with_it_as_summary_text_before_the_message() -> None:
    events, _ = played(Parts(thinking="Greet "), Parts(thinking="back."), Parts(content="Hi!"))
    final = events[-1]["response"]
    assert [item["type"] for item in final["output"]] == ["reasoning", "message"]
    assert final["output"][0]["summary"] == [{"type": "summary_text", "text": "Greet back."}]
    added = [e for e in events if e["type"] == "response.output_item.added"]
    assert [e["output_index"] for e in added] == [0, 1]


def test_thinking_streams_as_reasoning_summary_events_closed_before_the_text() -> None:
    events, _ = played(Parts(thinking="Greet "), Parts(thinking="back."), Parts(content="Hi!"))
    assert kinds(events)[2:11] == [
        "response.output_item.added", "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta", "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done", "response.reasoning_summary_part.done",
        "response.output_item.done", "response.output_item.added",
        "response.content_part.added"]
    assert events[6]["text"] == "Greet back." and events[6]["summary_index"] == 0


def test_a_tool_call_is_a_function_call_item_with_its_arguments_as_json_text() -> None:
    call = {"id": "call_abc", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    events, _ = played(Parts(tool_calls=[call]))
    item = events[-1]["response"]["output"][0]
    assert item == {"id": item["id"], "type": "function_call", "status": "completed",
                    "call_id": "call_abc", "name": "get_weather",
                    "arguments": '{"city":"Paris"}'}
    assert kinds(events)[2:-1] == [
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.done", "response.output_item.done"]


def test_text_before_a_call_closes_its_message_first() -> None:
    call = {"id": "c", "function": {"name": "f", "arguments": {}}}
    events, _ = played(Parts(content="Let me look."), Parts(tool_calls=[call]))
    assert [item["type"] for item in events[-1]["response"]["output"]] == [
        "message", "function_call"]
    assert kinds(events).index("response.output_item.done") < kinds(events).index(
        "response.function_call_arguments.delta")


def test_running_out_of_tokens_makes_the_response_incomplete_as_openai_does() -> None:
    events, _ = played(Parts(content="The sky"), reason="length")
    final = events[-1]
    assert final["type"] == "response.incomplete"
    assert final["response"]["status"] == "incomplete"
    assert final["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert final["response"]["output"][0]["status"] == "incomplete"


def test_a_completed_response_has_usage_with_the_details_the_sdk_requires() -> None:
    events, _ = played(Parts(content="Hi"))
    response = events[-1]["response"]
    assert response["usage"] == {
        "input_tokens": 7, "input_tokens_details": {"cached_tokens": 4, "cache_write_tokens": 0},
        "output_tokens": 3, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 10}
    assert response["status"] == "completed" and response["completed_at"] is not None
    Response.model_validate(response)


def test_saying_nothing_is_still_an_empty_message() -> None:
    events, _ = played()
    assert events[-1]["response"]["output"][0]["content"][0]["text"] == ""


def test_a_failure_is_a_failed_response_holding_what_was_said() -> None:
    out = output()
    out.feed(Parts(content="Hel"))
    event = out.failed("worker crashed")
    EVENT.validate_python(event)
    assert event["type"] == "response.failed"
    assert event["response"]["error"] == {"code": "server_error", "message": "worker crashed"}
    assert event["response"]["output"][0]["content"][0]["text"] == "Hel"


def test_events_keep_what_their_item_was_when_they_were_made() -> None:
    events, _ = played(Parts(content="Hel"), Parts(content="lo"))
    added = next(e for e in events if e["type"] == "response.output_item.added")
    assert added["item"]["content"] == [] and added["item"]["status"] == "in_progress"


# ---- the endpoint, in process -----------------------------------------------------------------

class FakeWorker:
    def send(self, msg: Any) -> None:
        pass


class Scheduler:
    """Jobs that say `replies`; what each submission asked for is kept in `submitted`."""

    def __init__(self) -> None:
        self.replies: list[Any] = []
        self.submitted: list[dict[str, Any]] = []

    async def submit(self, ref: Any, load: Any, keep_alive: Any, prompt: Any, options: Any,
                     want_context: bool, **rest: Any) -> Job[protocol.Done]:
        self.submitted.append({"prompt": prompt, "options": options, **rest})
        queue: asyncio.Queue[Any] = asyncio.Queue()
        for msg in self.replies:
            queue.put_nowait(msg)
        runner: Any = SimpleNamespace(worker=FakeWorker())
        return Job(1, runner, ref.name, 0, protocol.Done, queue, lambda job: None)

    def says(self, *texts: str, reason: str = "stop") -> None:
        self.replies = [protocol.Started(1, 7, False),
                        *(protocol.Chunk(1, text, 1) for text in texts), done(reason)]

    def devices(self) -> list[Any]:
        return []

    def snapshot(self) -> Snapshot:
        return Snapshot(runners=(), waiting=0, worker_restarts=0)

    async def stop_admitting(self) -> None:
        pass

    async def stop(self) -> None:
        pass


@pytest.fixture
def scheduler() -> Scheduler:
    return Scheduler()


@pytest.fixture
async def client(aiohttp_client: Client, tmp_path: Path, scheduler: Scheduler) -> TestClient:
    app = build_app(load_settings({}), Store(tmp_path / "models"), scheduler)  # type: ignore[arg-type]
    test_client = await aiohttp_client(app)
    weights = one_block_model()
    digest = "sha256:" + hashlib.sha256(weights).hexdigest()
    assert (await test_client.post(f"/api/blobs/{digest}", data=weights)).status == 201
    for name, template in (("plain", "{{ range .Messages }}{{ .Content }}{{ end }}"),
                           ("toolbox", TOOL_TEMPLATE), ("thinker", THINK_TEMPLATE)):
        reply = await test_client.post("/api/create", json={
            "model": name, "files": {"m.gguf": digest}, "template": template, "stream": False,
            "parameters": {"temperature": 0.3}})
        assert reply.status == 200, await reply.text()
    return test_client


def sdk(client: TestClient) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key="unused",
                              max_retries=0, _strict_response_validation=True)


async def test_the_sdk_reads_a_response_and_its_output_text(client: TestClient,
                                                           scheduler: Scheduler) -> None:
    scheduler.says("Hello", " there")
    reply = await sdk(client).responses.create(model="plain", input="Hi",
                                               instructions="Be brief.", metadata={"k": "v"})
    assert reply.id.startswith("resp_") and reply.object == "response"
    assert reply.status == "completed" and reply.output_text == "Hello there"
    assert reply.metadata == {"k": "v"} and reply.instructions == "Be brief."
    assert reply.usage is not None and reply.usage.total_tokens == 10
    sent = scheduler.submitted[0]["prompt"]["messages"]
    assert sent == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]


async def test_the_reply_says_the_sampling_values_the_model_ran_with(
        client: TestClient, scheduler: Scheduler) -> None:
    scheduler.says("x")
    reply = await sdk(client).responses.create(model="plain", input="Hi", top_p=0.5)
    # Ollama's /v1/responses default temperature over the Modelfile's 0.3; the request's top_p
    assert (reply.temperature, reply.top_p) == (1.0, 0.5)
    scheduler.says("x")
    reply = await sdk(client).responses.create(model="plain", input="Hi", temperature=0.2)
    assert (reply.temperature, reply.top_p) == (0.2, 0.9)  # the request's; top_p the model's


async def test_the_sdks_stream_helper_collects_the_text_and_the_final_response(
        client: TestClient, scheduler: Scheduler) -> None:
    scheduler.says("Hel", "lo")
    async with sdk(client).responses.stream(model="plain", input="Hi") as stream:
        deltas = [event.delta async for event in stream
                  if event.type == "response.output_text.delta"]
        final = await stream.get_final_response()
    assert deltas == ["Hel", "lo"] and final.output_text == "Hello"


async def test_the_stream_is_server_sent_events_named_by_their_type(
        client: TestClient, scheduler: Scheduler) -> None:
    scheduler.says("Hi")
    reply = await client.post("/v1/responses", json=request(model="plain", stream=True))
    assert reply.status == 200 and reply.content_type == "text/event-stream"
    frames = (await reply.read()).decode().split("\n\n")
    assert frames[-1] == ""  # no [DONE]: the last event is response.completed
    for frame in frames[:-1]:
        name, data = frame.split("\n")
        assert name == f"event: {orjson.loads(data.removeprefix('data: '))['type']}"
    assert frames[0].startswith("event: response.created\ndata: ")


async def test_a_tool_call_from_the_models_template_comes_back_as_a_function_call(
        client: TestClient, scheduler: Scheduler) -> None:
    scheduler.says('{"name": "get_weather", "arguments": {"city": "Paris"}}')
    reply = await sdk(client).responses.create(model="toolbox", input="Weather?",
                                               tools=[WEATHER])  # type: ignore[list-item]
    [call] = reply.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert orjson.loads(call.arguments) == {"city": "Paris"} and call.call_id.startswith("call_")
    assert scheduler.submitted[0]["prompt"]["tools"][0]["function"]["name"] == "get_weather"


async def test_a_call_of_a_namespaced_tool_comes_back_under_its_qualified_name(
        client: TestClient, scheduler: Scheduler) -> None:
    scheduler.says('{"name": "crm.get_weather", "arguments": {"city": "Paris"}}')
    crm = {"type": "namespace", "name": "crm", "description": "The CRM", "tools": [WEATHER]}
    reply = await sdk(client).responses.create(model="toolbox", input="Weather?",
                                               tools=[crm])  # type: ignore[list-item]
    [call] = reply.output
    assert call.type == "function_call" and call.name == "crm.get_weather"  # as Ollama names it
    assert reply.tools[0].type == "namespace"  # echoed as given, read by the SDK


async def test_a_required_tool_choice_sends_the_calls_grammar_to_the_worker(
        client: TestClient, scheduler: Scheduler) -> None:
    scheduler.says('{"name": "get_weather", "arguments": {"city": "Paris"}}')
    reply = await sdk(client).responses.create(model="toolbox", input="Weather?",
                                               tools=[WEATHER],  # type: ignore[list-item]
                                               tool_choice="required")
    assert reply.output[0].type == "function_call" and reply.tool_choice == "required"
    schema = scheduler.submitted[0]["output_format"]
    assert schema["properties"]["name"] == {"const": "get_weather"}


async def test_reasoning_comes_back_as_a_reasoning_item(client: TestClient,
                                                        scheduler: Scheduler) -> None:
    scheduler.says("<think>Greet.</think>", "Hello!")
    reply = await sdk(client).responses.create(model="thinker", input="Hi",
                                               reasoning={"effort": "low"})
    reasoning, message = reply.output
    assert reasoning.type == "reasoning" and reasoning.summary[0].text == "Greet."
    assert message.type == "message" and reply.output_text == "Hello!"
    assert scheduler.submitted[0]["prompt"]["think"] == "low"


async def test_a_bad_request_is_a_400_in_openais_shape(client: TestClient) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await sdk(client).responses.create(model="plain", input="Hi",
                                           extra_body={"max_tool_calls": 3})
    assert info.value.body == {"message": '"max_tool_calls" is not supported',
                               "type": "invalid_request_error", "param": None, "code": None}


async def test_an_unknown_model_is_a_404_in_openais_shape(client: TestClient) -> None:
    with pytest.raises(openai.NotFoundError):
        await sdk(client).responses.create(model="missing", input="Hi")


async def test_a_failure_mid_stream_ends_it_with_response_failed(
        client: TestClient, scheduler: Scheduler) -> None:
    scheduler.replies = [protocol.Chunk(1, "Hel", 1), protocol.Failed(1, "worker crashed")]
    reply = await client.post("/v1/responses", json=request(model="plain", stream=True))
    frames = [frame for frame in (await reply.read()).decode().split("\n\n") if frame]
    last = orjson.loads(frames[-1].split("\n")[1].removeprefix("data: "))
    assert last["type"] == "response.failed"
    assert last["response"]["error"]["message"] == "worker crashed"
    assert last["sequence_number"] == len(frames) - 1

"""The OpenAI-compatible /v1 endpoints, driven by the official `openai` package, sync and async."""

from __future__ import annotations

import base64
import json
import struct

import openai
import pytest

from tests.e2e.conftest import MODEL
from tests.e2e.server import Server

ASK = [{"role": "user", "content": "Why is the sky blue?"}]


@pytest.fixture
def client(server: Server) -> openai.OpenAI:
    # max_retries=0: a bad request must fail at once, never look retryable
    return openai.OpenAI(base_url=f"http://{server.base}/v1", api_key="unused", max_retries=0)


@pytest.fixture
def async_client(server: Server) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"http://{server.base}/v1", api_key="unused",
                              max_retries=0)


def test_chat_completion(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=8, seed=1,
                                           temperature=0)
    assert reply.id.startswith("chatcmpl-") and reply.object == "chat.completion"
    assert reply.choices[0].message.role == "assistant" and reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None and reply.usage.completion_tokens == 8
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + 8
    assert reply.system_fingerprint


def test_streamed_chat_completion_with_usage(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=8, stream=True,
        stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 8


def test_a_stream_names_the_role_once_and_ends_with_a_finish_chunk(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=8,
                                                 stream=True, temperature=0))
    assert [c.choices[0].delta.role for c in chunks] == ["assistant"] + [None] * (len(chunks) - 1)
    last = chunks[-1].choices[0]
    assert last.finish_reason == "length" and last.delta.content is None


def test_the_sdks_stream_helper_puts_together_the_answer_given_whole(
        client: openai.OpenAI) -> None:
    # Cut at a stop, not the limit: the helper raises on "length".
    ask = {"model": MODEL, "messages": ASK, "max_tokens": 64, "temperature": 0, "stop": ["."]}
    whole = client.chat.completions.create(**ask).choices[0]
    with client.chat.completions.stream(**ask) as stream:
        streamed = stream.get_final_completion().choices[0]
    assert streamed.message.role == "assistant"
    assert streamed.message.content == whole.message.content
    assert streamed.finish_reason == whole.finish_reason


def test_two_streamed_tool_calls_stay_two_calls_in_the_sdk(server: Server,
                                                           client: openai.OpenAI) -> None:
    from tests.e2e.test_tools_thinking import CALL, TOOL_TEMPLATE, WEATHER  # noqa: PLC0415

    # Its calls go out as a JSON list, each call streamed as soon as it is complete.
    listing = (TOOL_TEMPLATE.replace("{{ if .ToolCalls }}{{ range", "{{ if .ToolCalls }}[{{ range")
               .replace("{{ end }}{{ else }}", "{{ end }}]{{ else }}"))
    server.post("/api/create", {"model": "lister", "from": MODEL, "template": listing,
                                "stream": False})
    two = {"type": "array", "items": CALL, "minItems": 2, "maxItems": 2}
    with client.chat.completions.stream(
            model="lister", messages=[{"role": "user", "content": "Weather in Paris and Rome?"}],
            tools=[WEATHER], max_tokens=340, seed=1,
            response_format={"type": "json_schema",
                             "json_schema": {"name": "calls", "schema": two}}) as stream:
        final = stream.get_final_completion().choices[0]
    calls = final.message.tool_calls
    assert [call.function.name for call in calls] == ["get_weather", "get_weather"]
    assert all("city" in json.loads(call.function.arguments) for call in calls)
    assert final.finish_reason == "tool_calls"


async def test_async_chat_completion(async_client: openai.AsyncOpenAI) -> None:
    reply = await async_client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=4)
    assert reply.choices[0].message.content


async def test_async_streamed_chat_completion(async_client: openai.AsyncOpenAI) -> None:
    stream = await async_client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=4,
                                                         stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream])
    assert text


def test_stop_strings_and_the_same_seed_give_the_same_answer(client: openai.OpenAI) -> None:
    def ask() -> str:
        return client.chat.completions.create(
            model=MODEL, messages=ASK, max_tokens=12, seed=42, temperature=0.9, top_p=0.9,
            frequency_penalty=0.5, presence_penalty=0.5, stop=["zzz"]).choices[0].message.content

    assert ask() == ask()


def test_json_schema_response_format(client: openai.OpenAI) -> None:
    schema = {"type": "object", "required": ["colour"],
              "properties": {"colour": {"type": "string", "maxLength": 10}}}
    reply = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Name a colour as JSON."}],
        response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}},
        max_tokens=100)  # the longest colour the schema allows fits
    assert set(json.loads(reply.choices[0].message.content)) == {"colour"}


def test_n_above_one_is_refused_with_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=ASK, n=2)
    assert "n other than 1" in info.value.message


def test_image_parts_are_refused_for_a_text_model(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="images"):
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}])


@pytest.mark.parametrize("field", [{"logit_bias": {"42": 5}}, {"audio": {"voice": "alloy"}},
                                   {"prediction": {"type": "content", "content": "x"}}],
                         ids=["logit_bias", "audio", "prediction"])
def test_a_field_corral_does_not_implement_is_a_400_naming_it(client: openai.OpenAI,
                                                             field: dict) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=ASK, **field)
    [name] = field
    assert info.value.body["message"] == f'"{name}" is not supported'


def test_fields_without_effect_here_are_accepted(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=2, user="u-1",
                                           metadata={"run": "7"}, store=False,
                                           service_tier="auto", parallel_tool_calls=True)
    assert reply.choices[0].message.content


def test_a_completion_or_embedding_field_corral_does_not_implement_is_a_400(
        client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match='"best_of" is not supported'):
        client.completions.create(model=MODEL, prompt="x", best_of=2)
    with pytest.raises(openai.BadRequestError, match='"extra" is not supported'):
        client.embeddings.create(model=MODEL, input="x", extra_body={"extra": 1})


def test_an_unknown_model_is_a_404_in_openais_shape(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="missing:1", messages=ASK)
    assert info.value.body["type"] == "not_found_error"


def test_tool_calls_come_back_with_finish_reason_tool_calls(server: Server,
                                                            client: openai.OpenAI) -> None:
    from tests.e2e.test_tools_thinking import CALL, TOOL_TEMPLATE, WEATHER  # noqa: PLC0415

    server.post("/api/create", {"model": "toolbox", "from": MODEL, "template": TOOL_TEMPLATE,
                                "stream": False})
    reply = client.chat.completions.create(
        model="toolbox", messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER], response_format={"type": "json_schema",
                                          "json_schema": {"name": "call", "schema": CALL}},
        max_tokens=160)  # the longest call CALL allows fits
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and call.id.startswith("call")
    assert "city" in json.loads(call.function.arguments)
    followup = client.chat.completions.create(model="toolbox", tools=[WEATHER], max_tokens=4,
                                              messages=[
        {"role": "user", "content": "Weather in Paris?"}, choice.message.model_dump(),
        {"role": "tool", "tool_call_id": call.id, "content": "18 degrees"}])
    assert followup.choices[0].message.role == "assistant"


def test_completion_and_its_stream(client: openai.OpenAI) -> None:
    reply = client.completions.create(model=MODEL, prompt="The sky is", max_tokens=5)
    assert reply.id.startswith("cmpl-") and reply.choices[0].text
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model=MODEL, prompt="The sky is", max_tokens=5, stream=True) if c.choices)
    assert streamed


def test_echo_is_refused_with_a_400(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="echo"):
        client.completions.create(model=MODEL, prompt="x", echo=True)


def test_embeddings_of_text_tokens_and_base64(client: openai.OpenAI) -> None:
    texts = client.embeddings.create(model=MODEL, input=["hello", "world"])
    assert [d.index for d in texts.data] == [0, 1] and len(texts.data[0].embedding) == 640
    tokens = client.embeddings.create(model=MODEL, input=[[2, 9259]], dimensions=64)
    assert len(tokens.data[0].embedding) == 64
    assert abs(sum(v * v for v in tokens.data[0].embedding) - 1) < 1e-4
    raw = client.embeddings.with_raw_response.create(model=MODEL, input="hello",
                                                     encoding_format="base64").http_response.json()
    packed = base64.b64decode(raw["data"][0]["embedding"])
    floats = struct.unpack(f"<{len(packed) // 4}f", packed)
    assert floats == pytest.approx(texts.data[0].embedding, abs=1e-6)
    assert texts.usage.prompt_tokens > 0


def test_models_are_listed_and_retrieved(client: openai.OpenAI) -> None:
    ids = [m.id for m in client.models.list()]
    assert MODEL in ids
    model = client.models.retrieve(MODEL)
    assert model.id == MODEL and model.owned_by == "library"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("missing:1")


@pytest.mark.parametrize("max_tokens", [-1, 0])
def test_max_tokens_below_one_is_a_400(client: openai.OpenAI, max_tokens: int) -> None:
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.completions.create(model=MODEL, prompt="x", max_tokens=max_tokens)


def test_an_answer_sent_back_whole_in_the_history_is_accepted(client: openai.OpenAI) -> None:
    first = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=2)
    # What a client appends: the SDK's message dumped whole (refusal, annotations, audio...).
    history = [*ASK, first.choices[0].message.model_dump(), {"role": "user", "content": "More?"}]
    assert client.chat.completions.create(model=MODEL, messages=history, max_tokens=2).choices


def test_a_message_field_corral_does_not_implement_is_a_400_naming_it(
        client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=[
            {"role": "user", "content": "Hi", "cache_control": {"type": "ephemeral"}}])
    assert info.value.body["message"] == '"messages[0].cache_control" is not supported'


def test_an_assistant_messages_reasoning_reaches_the_template_as_thinking(
        server: Server, client: openai.OpenAI) -> None:
    template = "{{ range .Messages }}{{ .Thinking }} {{ .Content }}\n{{ end }}"
    assert server.post("/api/create", {"model": "thinks:1", "from": MODEL, "template": template,
                                       "stream": False}).status == 200
    said = {"role": "assistant", "content": "Paris."}
    ask = {"role": "user", "content": "Sure?"}

    def prompt_tokens(answer: dict) -> int:
        return client.chat.completions.create(model="thinks:1", messages=[*ASK, answer, ask],
                                              max_tokens=1).usage.prompt_tokens

    reasoned = {**said, "reasoning": "The capital of France is Paris, as every atlas shows."}
    assert prompt_tokens(reasoned) > prompt_tokens(said) + 5
    server.request("DELETE", "/api/delete", {"model": "thinks:1"})

"""docs/openapi.yaml: a valid OpenAPI 3.1 document that lists exactly the app's routes, whose
schemas accept realistic traffic (and refuse wrong traffic), and that the app serves as JSON.

Responses the app can give without a model runner (the store, errors, load/unload) are taken
from the real app and checked against the operation's documented response for their status;
generated text is checked through hand-written samples shaped like the handlers' output.
"""

from __future__ import annotations

import hashlib
import math
import re
from pathlib import Path
from typing import Any, Awaitable, Callable

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate as validate_spec
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from scheduler.snapshot import Snapshot
from server import __version__
from server.api import openapi
from server.app import build_app
from server.settings import load as load_settings
from store.store import Store
from tests.gguf_files import one_block_model
from workers.options import IGNORED, OPTIONS

Client = Callable[..., Awaitable[TestClient]]

DOC = openapi.load()
BASE = "urn:corral:openapi"
REGISTRY = Registry().with_resource(
    BASE, Resource.from_contents(DOC, default_specification=DRAFT202012))
METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def validator(pointer: str) -> Draft202012Validator:
    """A validator for the schema at `pointer` in the document (its $refs resolve there)."""
    return Draft202012Validator({"$ref": f"{BASE}#{pointer}"}, registry=REGISTRY)


def schema(name: str) -> Draft202012Validator:
    return validator(f"/components/schemas/{name}")


def _escape(part: str) -> str:
    return part.replace("~", "~0").replace("/", "~1")


# --- 1. a valid OpenAPI 3.1 document ------------------------------------------------------------

def test_the_document_is_valid_openapi_3_1() -> None:
    validate_spec(DOC)  # picks the 3.1 validator from the `openapi` field
    assert DOC["openapi"].startswith("3.1.")
    assert DOC["info"]["version"] == __version__


def test_every_schema_reference_resolves() -> None:
    refs = re.findall(r'"\$ref":"([^"]+)"', orjson.dumps(DOC).decode())
    assert refs
    for ref in set(refs):
        assert ref.startswith("#/components/")
        node: Any = DOC
        for part in ref[2:].split("/"):
            node = node[part.replace("~1", "/").replace("~0", "~")]


def test_options_match_the_declared_options() -> None:
    """Every option of workers/options.py, with its type and range; the ignored old ones too."""
    props = DOC["components"]["schemas"]["Options"]["properties"]
    assert set(props) == {opt.name for opt in OPTIONS} | set(IGNORED)
    kinds = {int: "integer", float: "number", bool: "boolean"}
    for opt in OPTIONS:
        prop = props[opt.name]
        if opt.kind is list:
            assert {"type": "array", "items": {"type": "string"}, "maxItems": 64} in prop["oneOf"]
            continue
        assert prop["type"] == [kinds[opt.kind], "null"], opt.name
        assert prop.get("minimum", -math.inf) == opt.low, opt.name
        assert prop.get("maximum", math.inf) == opt.high, opt.name
    for name in IGNORED:
        assert props[name].get("deprecated") is True


# --- 2. the document and the app list the same routes ------------------------------------------

class DummyScheduler:
    """What the handlers reached here ask of the scheduler: no workers, nothing loaded."""

    async def stop_admitting(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def snapshot(self) -> Snapshot:
        return Snapshot(runners=(), waiting=0, worker_restarts=0)

    def devices(self) -> list[Any]:
        return []

    async def probe(self, timeout: float) -> dict[str, str]:
        return {"cpu": "ready"}

    async def load(self, ref: Any, load: Any, keep_alive: float | None) -> int:
        return 1234

    async def unload(self, digest: str) -> None:
        pass


def make_app(tmp_path: Path, **env: str) -> web.Application:
    scheduler: Any = DummyScheduler()
    return build_app(load_settings(env), Store(tmp_path / "models"), scheduler)


def _template(path: str) -> str:
    """aiohttp's `{name:regex}` as OpenAPI's `{name}`."""
    return re.sub(r"\{(\w+):[^}]*\}", r"{\1}", path)


def test_the_document_lists_exactly_the_apps_routes(tmp_path: Path) -> None:
    registered = set()
    for route in make_app(tmp_path).router.routes():
        info = route.resource.get_info() if route.resource else {}
        path = info.get("path") or info.get("formatter")
        registered.add((route.method.lower(), _template(path)))
    # aiohttp adds HEAD to every GET route; only GET / documents it (the liveness probe).
    explicit = {(m, p) for m, p in registered
                if m != "head" or ("get", p) not in registered}
    documented = {(method, path) for path, item in DOC["paths"].items()
                  for method in item if method in METHODS}
    assert explicit - documented == set(), "routes missing from docs/openapi.yaml"
    assert documented - registered == set(), "documented but not served"
    assert ("get", "/api/openapi.json") in documented


def test_only_the_liveness_probe_is_open() -> None:
    assert {"apiKey": []} in DOC["security"] and {} in DOC["security"]
    open_ops = {(method, path) for path, item in DOC["paths"].items()
                for method, op in item.items() if method in METHODS and op.get("security") == []}
    assert open_ops == {("get", "/"), ("head", "/")}
    assert DOC["components"]["securitySchemes"]["apiKey"] == {
        **DOC["components"]["securitySchemes"]["apiKey"], "type": "http", "scheme": "bearer"}


# --- 3. realistic samples validate (and wrong ones do not) --------------------------------------

NOW = "2025-06-01T12:00:00.123456Z"
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
STATS = {"total_duration": 512_000_000, "load_duration": 1_000_000, "prompt_eval_count": 26,
         "prompt_eval_duration": 120_000_000, "eval_count": 12, "eval_duration": 380_000_000}
DETAILS = {"parent_model": "", "format": "gguf", "family": "gemma3", "families": ["gemma3"],
           "parameter_size": "268.10M", "quantization_level": "Q4_K_M"}

VALID = [
    ("GenerateRequest", {"model": "gemma3:270m", "prompt": "Why is the sky blue?",
                         "stream": True, "options": {"temperature": 0.2, "num_predict": 64,
                                                     "stop": ["\n\n"], "seed": 42},
                         "keep_alive": "10m", "format": "json", "think": False}),
    ("GenerateRequest", {"name": "gemma3", "prompt": "", "keep_alive": 0}),
    ("GenerateRequest", {"model": "m", "prompt": "fn main() {", "suffix": "}", "raw": False,
                         "context": [1, 2, 3], "format": {"type": "object"}, "think": "high",
                         "options": {"mirostat": 2, "num_ctx": 8192, "stop": "END"}}),
    ("GenerateStreamLine", {"model": "gemma3:270m", "created_at": NOW, "response": "The",
                            "done": False}),
    ("GenerateStreamLine", {"model": "gemma3:270m", "created_at": NOW, "response": "",
                            "done": True, "done_reason": "stop", "context": [2, 105, 2364],
                            **STATS}),
    ("GenerateStreamLine", {"error": "worker crashed"}),
    ("GenerateResponse", {"model": "gemma3:270m", "created_at": NOW, "response": "",
                          "done": True, "done_reason": "unload"}),
    ("ChatRequest", {"model": "qwen3:0.6b", "stream": False, "tools": [WEATHER_TOOL],
                     "messages": [
                         {"role": "system", "content": "Be brief."},
                         {"role": "user", "content": "Weather in Paris?"},
                         {"role": "assistant", "content": "", "tool_calls": [
                             {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
                         {"role": "tool", "content": "22°C", "tool_name": "get_weather"},
                         {"role": "user", "content": "And Lyon?"}]}),
    ("ChatResponse", {"model": "qwen3:0.6b", "created_at": NOW, "done": True,
                      "done_reason": "stop", **STATS,
                      "message": {"role": "assistant", "content": "",
                                  "thinking": "The user wants the weather.",
                                  "tool_calls": [{"id": "call_k3xq81ab", "function": {
                                      "index": 0, "name": "get_weather",
                                      "arguments": {"city": "Lyon"}}}]}}),
    ("ChatStreamLine", {"model": "m", "created_at": NOW, "done": False,
                        "message": {"role": "assistant", "content": "Hel"}}),
    ("EmbedRequest", {"model": "embeddinggemma", "input": ["first", "second"],
                      "truncate": False, "dimensions": 256}),
    ("EmbedRequest", {"model": "embeddinggemma", "input": "one"}),
    ("EmbedResponse", {"model": "embeddinggemma", "embeddings": [[0.1, -0.2], [0.3, 0.4]],
                       "total_duration": 14_143_917, "load_duration": 1_019_500,
                       "prompt_eval_count": 8}),
    ("EmbeddingsRequest", {"model": "embeddinggemma", "prompt": "Here is an article"}),
    ("EmbeddingsResponse", {"embedding": [0.56, 0.37, -0.12]}),
    ("CreateRequest", {"model": "mario", "from": "gemma3:270m", "system": "You are Mario.",
                       "parameters": {"temperature": 0.9, "stop": ["<end>"]},
                       "license": ["MIT"], "stream": False,
                       "messages": [{"role": "user", "content": "Who are you?"},
                                    {"role": "assistant", "content": "It's-a me!"}]}),
    ("CreateRequest", {"model": "tiny:q4", "quantize": "q4_K_M",
                       "files": {"tiny.gguf": "sha256:" + "ab" * 32}}),
    ("CreateRequest", {"name": "old", "modelfile": "FROM gemma3:270m\nPARAMETER seed 1\n"}),
    ("CreateStreamLine", {"status": "quantizing F16 model to Q4_K_M", "total": 291,
                          "completed": 17}),
    ("TagsResponse", {"models": [{"name": "gemma3:270m", "model": "gemma3:270m",
                                  "modified_at": NOW, "size": 253_000_000,
                                  "digest": "e7d36fb2c3b3" + "0" * 52, "details": DETAILS}]}),
    ("ShowResponse", {"modelfile": "FROM /models/blobs/sha256-abc\n", "parameters":
                      'stop                           "<end_of_turn>"', "template": "{{ .Prompt }}",
                      "details": DETAILS, "model_info": {"general.architecture": "gemma3",
                                                         "tokenizer.ggml.tokens": []},
                      "capabilities": ["completion"], "modified_at": NOW}),
    ("PsResponse", {"models": [{"name": "gemma3:270m", "model": "gemma3:270m", "size": 500_000_000,
                                "digest": "0" * 64, "details": DETAILS, "expires_at": NOW,
                                "size_vram": 500_000_000, "context_length": 4096}]}),
    ("ChatCompletionRequest", {"model": "qwen3:0.6b", "temperature": 0, "max_tokens": 100,
                               "stream": True, "stream_options": {"include_usage": True},
                               "tools": [WEATHER_TOOL], "tool_choice": "auto",
                               "response_format": {"type": "json_object"},
                               "messages": [
                                   {"role": "developer", "content": "Be brief."},
                                   {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                                   {"role": "assistant", "content": None, "tool_calls": [
                                       {"id": "call_1", "type": "function", "function": {
                                           "name": "get_weather",
                                           "arguments": "{\"city\": \"Paris\"}"}}]},
                                   {"role": "tool", "tool_call_id": "call_1", "content": "22"}]}),
    ("ChatCompletion", {"id": "chatcmpl-0123456789abcdef01234567", "object": "chat.completion",
                        "created": 1748779200, "model": "qwen3:0.6b",
                        "system_fingerprint": "fp_corral",
                        "choices": [{"index": 0, "finish_reason": "tool_calls", "logprobs": None,
                                     "message": {
                            "role": "assistant", "content": "", "tool_calls": [
                                {"index": 0, "id": "call_k3xq81ab", "type": "function",
                                 "function": {"name": "get_weather",
                                              "arguments": "{\"city\":\"Lyon\"}"}}]}}],
                        "usage": {"prompt_tokens": 40, "completion_tokens": 12,
                                  "total_tokens": 52}}),
    ("ChatCompletionEvent", {"id": "chatcmpl-1", "object": "chat.completion.chunk",
                             "created": 1748779200, "model": "m", "system_fingerprint": "fp_corral",
                             "choices": [{"index": 0, "finish_reason": None,
                                          "delta": {"role": "assistant", "content": "Hi"},
                                          "logprobs": {"content": [
                                              {"token": "Hi", "logprob": -0.1, "bytes": [72, 105],
                                               "top_logprobs": []}]}}]}),
    ("ChatCompletionEvent", {"id": "chatcmpl-1", "object": "chat.completion.chunk",
                             "created": 1748779200, "model": "m", "system_fingerprint": "fp_corral",
                             "choices": [{"index": 0, "finish_reason": "stop", "delta": {},
                                          "logprobs": None}]}),
    ("ChatCompletionEvent", {"id": "chatcmpl-1", "object": "chat.completion.chunk",
                             "created": 1748779200, "model": "m", "system_fingerprint": "fp_corral",
                             "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 1,
                                                      "total_tokens": 4}}),
    ("ChatCompletionEvent", {"error": {"message": "worker crashed", "type": "api_error",
                                       "param": None, "code": None}}),
    ("CompletionRequest", {"model": "m", "prompt": "Say this is a test", "suffix": "end",
                           "stop": "\n", "seed": 1, "max_tokens": 5,
                           "response_format": {"type": "json_schema", "json_schema": {
                               "name": "x", "schema": {"type": "object"}}}}),
    ("Completion", {"id": "cmpl-1", "object": "text_completion", "created": 1748779200,
                    "model": "m", "system_fingerprint": "fp_corral",
                    "choices": [{"text": "This is a test", "index": 0, "logprobs": None,
                                 "finish_reason": "length"}],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 5, "total_tokens": 10}}),
    ("EmbeddingRequest", {"model": "m", "input": [[1, 2, 3], [4]], "encoding_format": "base64",
                          "dimensions": 128}),
    ("EmbeddingList", {"object": "list", "model": "m",
                       "data": [{"object": "embedding", "index": 0, "embedding": [0.1, 0.2]},
                                {"object": "embedding", "index": 1, "embedding": "zczMPc3MTD4="}],
                       "usage": {"prompt_tokens": 4, "total_tokens": 4}}),
    ("ResponsesRequest", {"model": "m", "instructions": "You are Codex.", "stream": True,
                          "store": False, "include": ["reasoning.encrypted_content"],
                          "tools": [{"type": "function", "name": "get_weather", "strict": True,
                                     "parameters": WEATHER_TOOL["function"]["parameters"]}],
                          "tool_choice": {"type": "function", "name": "get_weather"},
                          "reasoning": {"effort": "low", "summary": "auto"},
                          "text": {"format": {"type": "json_schema", "name": "x",
                                              "schema": {"type": "object"}}},
                          "max_output_tokens": 64, "conversation": None,
                          "input": [
                              {"role": "user", "content": "Weather in Paris?"},
                              {"type": "reasoning", "id": "rs_1", "summary": [
                                  {"type": "summary_text", "text": "Call the tool."}]},
                              {"type": "function_call", "call_id": "call_1",
                               "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
                              {"type": "function_call_output", "call_id": "call_1",
                               "output": "22"}]}),
    ("ResponsesStreamEvent", {"type": "response.reasoning_summary_text.delta",
                              "sequence_number": 3, "item_id": "rs_1", "output_index": 0,
                              "summary_index": 0, "delta": "Call"}),
    ("Error", {"error": "model \"nope:latest\" not found, try pulling it first"}),
    ("OpenAIError", {"error": {"message": "unauthorized", "type": "invalid_request_error",
                               "param": None, "code": "invalid_api_key"}}),
    ("AnthropicMessagesRequest", {
        "model": "qwen3:0.6b", "max_tokens": 1024, "stream": True, "metadata": {"user_id": "u"},
        "system": [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        "tools": [{"name": "get_weather", "description": "The weather in a city",
                   "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        "thinking": {"type": "enabled", "budget_tokens": 1024}, "temperature": 0.2,
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "A tool.", "signature": ""},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                 "input": {"city": "Paris"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "22°C"},
                {"type": "text", "text": "And Lyon?"}]}]}),
    ("AnthropicMessage", {"id": "msg_0123", "type": "message", "role": "assistant",
                          "model": "qwen3:0.6b", "stop_reason": "tool_use", "stop_sequence": None,
                          "content": [{"type": "thinking", "thinking": "Hm.", "signature": ""},
                                      {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                                       "input": {"city": "Lyon"}}],
                          "usage": {"input_tokens": 40, "output_tokens": 12}}),
    ("AnthropicStreamEvent", {"type": "content_block_delta", "index": 1,
                              "delta": {"type": "input_json_delta",
                                        "partial_json": "{\"city\":\"Lyon\"}"}}),
    ("AnthropicStreamEvent", {"type": "message_delta",
                              "delta": {"stop_reason": "end_turn", "stop_sequence": None},
                              "usage": {"input_tokens": 40, "output_tokens": 12}}),
    ("AnthropicError", {"type": "error", "error": {"type": "overloaded_error",
                                                   "message": "server busy"}}),
]

INVALID = [
    ("GenerateRequest", {"prompt": "no model"}),
    ("GenerateRequest", {"model": "m", "options": {"temperature": "hot"}}),
    ("GenerateRequest", {"model": "m", "options": {"not_an_option": 1}}),
    ("GenerateRequest", {"model": "m", "options": {"num_ctx": 0}}),
    ("GenerateRequest", {"model": "m", "think": "huge"}),
    ("GenerateRequest", {"model": "m", "logprobs": True, "top_logprobs": 21}),
    ("GenerateRequest", {"model": "m", "format": "yaml"}),
    ("GenerateRequest", {"model": "m", "context": [-1]}),
    ("ChatRequest", {"model": "m", "messages": [{"role": 7, "content": "hi"}]}),
    ("ChatRequest", {"model": "m", "tools": [{"type": "function", "function": {}}]}),
    ("ChatResponse", {"model": "m", "created_at": NOW, "done": True,
                      "message": {"role": "user", "content": "x"}}),
    ("GenerateStreamLine", {"model": "m", "created_at": NOW, "response": "", "done": True,
                            "done_reason": "eos"}),
    ("EmbedRequest", {"model": "m", "input": [1, 2]}),
    ("EmbedRequest", {"model": "m", "dimensions": 1.5}),
    ("CreateRequest", {"model": "m", "files": {"x.gguf": "md5:abc"}}),
    ("ChatCompletionRequest", {"model": "m", "messages": []}),
    ("ChatCompletionRequest", {"model": "m", "n": 2, "messages": [{"role": "user",
                                                                    "content": "x"}]}),
    ("ChatCompletion", {"id": "chatcmpl-1", "object": "chat.completion", "created": 1,
                        "model": "m", "system_fingerprint": "fp_corral", "usage": {},
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": "x"}}]}),
    ("CompletionRequest", {"model": "m", "prompt": ["a", "b"]}),
    ("EmbeddingRequest", {"model": "m", "input": []}),
    ("ResponsesRequest", {"model": "m", "input": "Hi", "previous_response_id": "resp_1"}),
    ("ResponsesRequest", {"model": "m", "input": "Hi", "store": True}),
    ("ResponsesRequest", {"model": "m", "input": "Hi", "max_tool_calls": 3}),
    ("ResponsesRequest", {"model": "m", "input": "Hi", "tools": [{"type": "web_search"}]}),
    ("ResponsesStreamEvent", {"type": "response.output_text.delta", "item_id": "msg_1",
                              "output_index": 0, "content_index": 0, "delta": "Hi",
                              "logprobs": []}),
    ("Error", {"error": {"message": "x", "type": "api_error", "param": None, "code": None}}),
    ("OpenAIError", {"error": "x"}),
    ("AnthropicMessagesRequest", {"model": "m", "messages": [{"role": "user", "content": "x"}]}),
    ("AnthropicMessagesRequest", {"model": "m", "max_tokens": 8, "n": 2,
                                  "messages": [{"role": "user", "content": "x"}]}),
    ("AnthropicMessagesRequest", {"model": "m", "max_tokens": 8, "thinking": {"type": "enabled"},
                                  "messages": [{"role": "user", "content": "x"}]}),
    ("AnthropicMessage", {"id": "msg_1", "type": "message", "role": "assistant", "model": "m",
                          "content": [{"type": "text"}], "stop_reason": "end_turn",
                          "stop_sequence": None, "usage": {"input_tokens": 1,
                                                           "output_tokens": 1}}),
    ("AnthropicStreamEvent", {"type": "ping_pong"}),
    ("AnthropicError", {"error": {"type": "api_error", "message": "x"}}),
]


@pytest.mark.parametrize(("name", "sample"), VALID, ids=[f"{n}-{i}" for i, (n, _) in
                                                          enumerate(VALID)])
def test_realistic_samples_validate(name: str, sample: dict[str, Any]) -> None:
    schema(name).validate(sample)


@pytest.mark.parametrize(("name", "sample"), INVALID, ids=[f"{n}-{i}" for i, (n, _) in
                                                            enumerate(INVALID)])
def test_wrong_samples_are_refused(name: str, sample: dict[str, Any]) -> None:
    assert not schema(name).is_valid(sample)


# --- ... and so do the app's own answers ---------------------------------------------------------

def _response_pointer(path: str, method: str, status: int) -> str:
    """Where the documented response for this status lies (following a components $ref)."""
    pointer = f"/paths/{_escape(path)}/{method}/responses/{status}"
    response = DOC["paths"][path][method]["responses"].get(str(status))
    assert response is not None, f"{method.upper()} {path} does not document {status}"
    return response["$ref"][1:] if "$ref" in response else pointer


async def conforms(resp: Any, path: str, method: str = "get") -> list[Any]:
    """The response's JSON values (one, or one per NDJSON line), each checked against the
    schema the document gives for the operation, status and content type."""
    pointer = _response_pointer(path, method, resp.status)
    node: Any = DOC
    for part in pointer[1:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    body = await resp.read()
    if "content" not in node:
        assert body == b"", f"{method.upper()} {path} {resp.status} sends an undocumented body"
        return []
    media = resp.content_type
    assert media in node["content"], f"{media} is not documented for {path} {resp.status}"
    check = validator(f"{pointer}/content/{_escape(media)}/schema")
    if media == "application/x-ndjson":
        values = [orjson.loads(line) for line in body.splitlines()]
    elif media == "application/json":
        values = [orjson.loads(body)]
    else:
        values = [body.decode()]
    for value in values:
        check.validate(value)
    return values


@pytest.fixture
async def client(aiohttp_client: Client, tmp_path: Path) -> TestClient:
    return await aiohttp_client(make_app(tmp_path))


async def test_the_store_endpoints_answer_as_documented(client: TestClient) -> None:
    weights = one_block_model()
    digest = "sha256:" + hashlib.sha256(weights).hexdigest()
    blob = f"/api/blobs/{digest}"
    await conforms(await client.head(blob), "/api/blobs/{digest}", "head")  # 404
    resp = await client.post(blob, data=weights)
    assert resp.status == 201
    await conforms(resp, "/api/blobs/{digest}", "post")
    await conforms(await client.head(blob), "/api/blobs/{digest}", "head")  # 200
    resp = await client.post("/api/blobs/sha256:" + "0" * 64, data=b"other bytes")
    assert resp.status == 400
    await conforms(resp, "/api/blobs/{digest}", "post")

    resp = await client.post("/api/create", json={"model": "tiny", "files": {"t.gguf": digest},
                                                  "system": "Be brief.",
                                                  "parameters": {"temperature": 0.1}})
    lines = await conforms(resp, "/api/create", "post")
    assert resp.content_type == "application/x-ndjson" and lines[-1] == {"status": "success"}
    resp = await client.post("/api/create", json={"model": "ns/tiny:v2", "from": "tiny",
                                                  "stream": False})
    assert await conforms(resp, "/api/create", "post") == [{"status": "success"}]

    tags = (await conforms(await client.get("/api/tags"), "/api/tags"))[0]
    assert {m["name"] for m in tags["models"]} == {"tiny:latest", "ns/tiny:v2"}
    for verbose in (False, True):
        resp = await client.post("/api/show", json={"model": "tiny", "verbose": verbose})
        assert resp.status == 200
        await conforms(resp, "/api/show", "post")
    resp = await client.post("/api/copy", json={"source": "tiny", "destination": "copied"})
    assert resp.status == 200
    await conforms(resp, "/api/copy", "post")

    listed = (await conforms(await client.get("/v1/models"), "/v1/models"))[0]
    assert {m["id"] for m in listed["data"]} == {"tiny:latest", "ns/tiny:v2", "copied:latest"}
    resp = await client.get("/v1/models/ns/tiny:v2")
    assert (await conforms(resp, "/v1/models/{model}"))[0]["owned_by"] == "ns"

    resp = await client.delete("/api/delete", json={"model": "copied"})
    assert resp.status == 200
    await conforms(resp, "/api/delete", "delete")

    # Loading and unloading: the answers come from the real handlers (the scheduler is a stub).
    for path, body in (("/api/generate", {"model": "tiny"}),
                       ("/api/generate", {"model": "tiny", "keep_alive": 0}),
                       ("/api/chat", {"model": "tiny", "messages": []}),
                       ("/api/embed", {"model": "tiny"}),
                       ("/api/embeddings", {"model": "tiny", "prompt": ""})):
        resp = await client.post(path, json=body)
        assert resp.status == 200, await resp.text()
        await conforms(resp, path, "post")


async def test_the_system_endpoints_answer_as_documented(client: TestClient) -> None:
    assert await conforms(await client.get("/"), "/") == ["Ollama is running"]
    await conforms(await client.head("/"), "/", "head")
    await conforms(await client.get("/api/version"), "/api/version")
    await conforms(await client.get("/api/ready"), "/api/ready")
    await conforms(await client.get("/api/ps"), "/api/ps")
    await conforms(await client.get("/metrics"), "/metrics")


@pytest.mark.parametrize(("method", "path", "body", "status"), [
    ("post", "/api/generate", {"model": "m", "prompt": 3}, 400),
    ("post", "/api/generate", {"model": "nope", "prompt": "hi"}, 404),
    ("post", "/api/chat", {"model": "m", "messages": [{"role": 7}]}, 400),
    ("post", "/api/embed", {"model": "m", "input": 3}, 400),
    ("post", "/api/create", {"model": "m"}, 400),
    ("post", "/api/show", {"model": "nope"}, 404),
    ("post", "/api/copy", {"source": "nope", "destination": "other"}, 404),
    ("delete", "/api/delete", {"model": "nope"}, 404),
    ("post", "/v1/chat/completions", {"model": "m", "messages": []}, 400),
    ("post", "/v1/chat/completions", {"model": "nope", "messages": [
        {"role": "user", "content": "hi"}]}, 404),
    ("post", "/v1/completions", {"model": "m", "prompt": "x", "echo": True}, 400),
    ("post", "/v1/embeddings", {"model": "m", "input": ""}, 400),
    ("post", "/v1/responses", {"model": "m", "input": "Hi", "store": True}, 400),
    ("post", "/v1/responses", {"model": "nope", "input": "Hi"}, 404),
    ("get", "/v1/models/nope", None, 404),
    ("post", "/v1/messages", {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
     400),
    ("post", "/v1/messages", {"model": "nope", "max_tokens": 8, "messages": [
        {"role": "user", "content": "hi"}]}, 404),
])
async def test_errors_have_the_documented_shape(client: TestClient, method: str, path: str,
                                                body: Any, status: int) -> None:
    resp = await client.request(method, path, json=body)
    assert resp.status == status
    template = "/v1/models/{model}" if path.startswith("/v1/models/") else path
    [error] = await conforms(resp, template, method)
    assert isinstance(error["error"], dict if path.startswith("/v1/") else str)


async def test_a_missing_api_key_has_the_documented_shape(aiohttp_client: Client,
                                                          tmp_path: Path) -> None:
    client = await aiohttp_client(make_app(tmp_path, CORRAL_API_KEY="secret"))
    assert (await client.get("/")).status == 200
    for path in ("/api/tags", "/v1/models", "/api/openapi.json"):
        resp = await client.get(path)
        assert resp.status == 401 and resp.headers["WWW-Authenticate"] == "Bearer"
        await conforms(resp, path)
    resp = await client.get("/api/openapi.json", headers={"Authorization": "Bearer secret"})
    assert resp.status == 200


# --- 4. the app serves the document --------------------------------------------------------------

async def test_the_app_serves_the_document_as_json(client: TestClient) -> None:
    resp = await client.get("/api/openapi.json")
    assert resp.status == 200
    assert resp.content_type == "application/json"
    assert await resp.json() == DOC

"""Translating between OpenAI's request and response fields and the native ones."""

from __future__ import annotations

import secrets
import time
from typing import Any

import orjson

from server import errors
from server.answer import Parts
from workers import protocol

SYSTEM_FINGERPRINT = "fp_corral"
# OpenAI's sampling fields and the native options they set.
_OPTIONS = {"seed": "seed", "temperature": "temperature", "top_p": "top_p",
            "frequency_penalty": "frequency_penalty", "presence_penalty": "presence_penalty"}


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def now() -> int:
    return int(time.time())


# What Ollama's openai package sets where a request leaves it out, over the model's own
# parameters (OpenAI's defaults): FromChatRequest and FromCompleteRequest both, FromResponsesRequest
# the temperature only.
CHAT_DEFAULTS = {"temperature": 1.0, "top_p": 1.0}
RESPONSES_DEFAULTS = {"temperature": 1.0}


def common(body: dict[str, Any],
           limits: tuple[str, ...] = ("max_completion_tokens", "max_tokens"),
           defaults: dict[str, float] = CHAT_DEFAULTS) -> dict[str, Any]:
    """The native fields every generating /v1 request maps to: model, stream and options.
    `limits`: the fields that may give num_predict, the first one set winning."""
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise errors.BadRequest("model is required")
    n = body.get("n")
    if n not in (None, 1):
        raise errors.BadRequest("n other than 1 is not supported")
    options = {**defaults, **{native: body[name] for name, native in _OPTIONS.items()
                              if body.get(name) is not None}}
    # max_completion_tokens replaces max_tokens; a null one is no limit of its own.
    key = next((k for k in limits if body.get(k) is not None), None)
    if key is not None:
        limit = body[key]
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise errors.BadRequest(f"{key} must be a positive integer")
        options["num_predict"] = limit
    if body.get("stop") is not None:
        options["stop"] = body["stop"]
    return {"model": body["model"], "stream": body.get("stream") is True, "options": options,
            "think": think(body)}


# OpenAI's reasoning effort (and Ollama's extra words) as the native `think`.
_EFFORTS = {"none": False, "minimal": "low", "low": "low", "medium": "medium", "high": "high",
            "max": "max", "xhigh": "max", "ultra": "max"}


def think(body: dict[str, Any]) -> bool | str | None:
    """`reasoning.effort` (Responses style) or `reasoning_effort`, as Ollama maps them."""
    reasoning = body.get("reasoning")
    effort = reasoning.get("effort") if isinstance(reasoning, dict) else body.get(
        "reasoning_effort")
    if effort is None or effort == "":
        return None
    if not isinstance(effort, str) or effort not in _EFFORTS:
        raise errors.BadRequest(f'invalid reasoning value: "{effort}" (must be "minimal", "low", '
                                '"medium", "high", "xhigh", "ultra", "max", or "none")')
    return _EFFORTS[effort]


def chat_logprobs(parts: Parts) -> dict[str, Any] | None:
    """A choice's `logprobs` as OpenAI writes them (every entry with its `top_logprobs`)."""
    if not parts.logprobs:
        return None
    return {"content": [{"top_logprobs": [], **entry} for entry in parts.logprobs]}


def completion_logprobs(parts: Parts, offset: int) -> dict[str, Any] | None:
    """A legacy completion choice's `logprobs`; `offset`: where this text starts in the answer."""
    if not parts.logprobs:
        return None
    offsets = []
    for entry in parts.logprobs:
        offsets.append(offset)
        offset += len(entry["token"])
    return {"tokens": [e["token"] for e in parts.logprobs],
            "token_logprobs": [e["logprob"] for e in parts.logprobs],
            "top_logprobs": [{t["token"]: t["logprob"] for t in e.get("top_logprobs", [])}
                             for e in parts.logprobs],
            "text_offset": offsets}


def include_usage(body: dict[str, Any]) -> bool:
    stream_options = body.get("stream_options")
    return isinstance(stream_options, dict) and stream_options.get("include_usage") is True


def response_format(body: dict[str, Any]) -> Any:
    """`response_format` as the native `format`: "json", a JSON schema, or nothing."""
    value = body.get("response_format")
    if value is None:
        return None
    kind = value.get("type") if isinstance(value, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        spec = value.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise errors.BadRequest("response_format.json_schema.schema must be an object")
        return schema
    raise errors.BadRequest('response_format.type must be "text", "json_object" or "json_schema"')


def usage(done: protocol.Done) -> dict[str, int]:
    return {"prompt_tokens": done.prompt_eval_count, "completion_tokens": done.eval_count,
            "total_tokens": done.prompt_eval_count + done.eval_count}


def finish_reason(done: protocol.Done, tool_called: bool) -> str:
    """As Ollama: a call makes a stop "tool_calls"; an answer cut at its limit stays "length"."""
    if done.done_reason == "length":
        return "length"
    return "tool_calls" if tool_called else "stop"


def tool_calls(parts: Parts) -> list[dict[str, Any]]:
    """Native tool calls as OpenAI writes them: arguments as a JSON string."""
    # The index counts the answer's calls (the parser's), not this chunk's: a client merges
    # streamed calls of the same index into one.
    return [{"index": call["function"].get("index", i), "id": call.get("id") or new_id("call"),
             "type": "function",
             "function": {"name": call["function"]["name"],
                          "arguments": orjson.dumps(call["function"].get("arguments", {})).decode()}}
            for i, call in enumerate(parts.tool_calls)]


_IMAGE_URL_PREFIXES = tuple(f"data:image/{kind};base64," for kind in ("jpeg", "jpg", "png", "webp"))


def image_data(value: Any, where: str = "") -> str:
    """An image part's base64 data, as Ollama takes it: a data: URL of an image type (or of
    none), never a remote URL; `where` starts the error message (Ollama's has none)."""
    def refuse(message: str) -> errors.BadRequest:
        return errors.BadRequest(f"{where}: {message}" if where else message)

    url = value.get("url") if isinstance(value, dict) else value
    if not isinstance(url, str):
        raise refuse("invalid image input")
    if url.startswith(("http://", "https://")):
        raise refuse("image URLs are not currently supported, please use base64 encoded data "
                     "instead")
    for prefix in (*_IMAGE_URL_PREFIXES, "data:;base64,"):
        if url.startswith(prefix):
            return url[len(prefix):]
    raise refuse("invalid image input")

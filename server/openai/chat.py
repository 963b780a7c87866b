"""POST /v1/chat/completions and POST /v1/completions, through the native chat and generate."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
from aiohttp import web

from server import errors
from server.answer import Parts
from server.api.chat import submit_chat
from server.api.generate import submit_generate
from server.generation import Bodies, Body, bodies, each_body
from server.openai import convert, fields
from server.resolve import prepare
from server.schemas import ChatRequest, GenerateRequest, read_request
from server.streaming import SSE_FRAMING, respond
from server.toolchoice import ForcedCall, forced
from workers import protocol


def _chat_request(body: dict[str, Any]) -> tuple[dict[str, Any], ChatRequest, ForcedCall | None]:
    fields.check(body, fields.CHAT)
    native = {**convert.common(body), "messages": _messages(body.get("messages")),
              "format": convert.response_format(body), "logprobs": body.get("logprobs"),
              "top_logprobs": body.get("top_logprobs")}
    choice = body.get("tool_choice")
    if body.get("tools") and choice != "none":
        native["tools"] = body["tools"]
    req = ChatRequest.parse(native)
    if not req.messages:
        raise errors.BadRequest("messages must not be empty")
    return body, req, _forced_call(choice, req.tools)


def _forced_call(choice: Any, tools: list[dict[str, Any]]) -> ForcedCall | None:
    """OpenAI's tool_choice: "none" and "auto" leave the model free (without tools, or with
    them); "required" and a named function hold it to a call (server/toolchoice.py)."""
    if choice in (None, "none", "auto"):
        return None
    if choice == "required":
        return forced(tools, None)
    function = choice.get("function") if isinstance(choice, dict) else None
    if (isinstance(choice, dict) and choice.get("type") == "function"
            and isinstance(function, dict) and isinstance(function.get("name"), str)):
        return forced(tools, function["name"])
    raise errors.BadRequest('tool_choice must be "none", "auto", "required" or '
                            '{"type": "function", "function": {"name": ...}}')


async def chat_completions(request: web.Request) -> web.StreamResponse:
    body, req, call = await read_request(request, _chat_request)
    run = await submit_chat(await prepare(request, req.model, req.options), req, call)
    reply_id, created, usage = convert.new_id("chatcmpl"), convert.now(), convert.include_usage(body)
    called = False  # whether a tool call went out, for the finish reason
    opened = False  # whether a chunk went out: only the first names the role, as OpenAI's

    def envelope(kind: str, choice: dict[str, Any]) -> dict[str, Any]:
        return {"id": reply_id, "object": kind, "created": created, "model": req.model,
                "system_fingerprint": convert.SYSTEM_FINGERPRINT, "choices": [choice]}

    def message(parts: Parts, role: bool = True, content: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {"role": "assistant"} if role else {}
        if content:
            out["content"] = parts.content
        if parts.thinking:
            out["reasoning"] = parts.thinking  # Ollama's name for it on /v1
        if parts.tool_calls:
            out["tool_calls"] = convert.tool_calls(parts)
        return out

    def delta(fields: dict[str, Any], parts: Parts | None = None,
              reason: str | None = None) -> Body:
        logprobs = convert.chat_logprobs(parts) if parts else None
        return envelope("chat.completion.chunk", {"index": 0, "delta": fields,
                                                  "logprobs": logprobs, "finish_reason": reason})

    def chunk(parts: Parts) -> Bodies:
        nonlocal called, opened
        called = called or bool(parts.tool_calls)
        role, opened = not opened, True
        if parts.thinking and (parts.content or parts.tool_calls):
            # As Ollama: the reasoning first, then what follows it, in chunks of their own.
            return [delta(message(Parts(thinking=parts.thinking), role, content=False), parts),
                    delta(message(replace(parts, thinking=""), False))]
        return delta(message(parts, role), parts)

    def final(parts: Parts, done: protocol.Done) -> Bodies:
        reason = convert.finish_reason(done, called or bool(parts.tool_calls))
        if not req.stream:
            return {**envelope("chat.completion", {"index": 0, "message": message(parts),
                                                   "logprobs": convert.chat_logprobs(parts),
                                                   "finish_reason": reason}),
                    "usage": convert.usage(done)}
        # What is left to say, then the finish reason in a chunk of its own (as OpenAI and
        # Ollama end a stream), then the usage when asked for.
        events = each_body(chunk(parts)) if parts or not opened else []
        events.append(delta({}, reason=reason))
        if usage:
            events.append({**envelope("chat.completion.chunk", {}), "choices": [],
                           "usage": convert.usage(done)})
        return events

    return await respond(request, bodies(request, run, req.stream, chunk, final), req.stream,
                         SSE_FRAMING)


def _completion_request(body: dict[str, Any]) -> tuple[dict[str, Any], GenerateRequest]:
    fields.check(body, fields.COMPLETIONS)
    if body.get("echo"):
        raise errors.BadRequest("echo is not supported")
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt:
        raise errors.BadRequest("prompt must be a non-empty string")
    native = {**convert.common(body), "prompt": prompt, "suffix": body.get("suffix"),
              "format": convert.response_format(body)}
    top = body.get("logprobs")  # the legacy API's: how many of the top tokens
    if top is not None:
        native.update(logprobs=True, top_logprobs=top)
    return body, GenerateRequest.parse(native)


async def completions(request: web.Request) -> web.StreamResponse:
    body, req = await read_request(request, _completion_request)
    run = await submit_generate(await prepare(request, req.model, req.options), req)
    reply_id, created, usage = convert.new_id("cmpl"), convert.now(), convert.include_usage(body)

    def envelope(choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {"id": reply_id, "object": "text_completion", "created": created,
                "model": req.model, "system_fingerprint": convert.SYSTEM_FINGERPRINT,
                "choices": choices}

    sent = 0  # characters of the answer sent so far: where each chunk's tokens start

    def choice(parts: Parts, reason: str | None) -> dict[str, Any]:
        nonlocal sent
        logprobs = convert.completion_logprobs(parts, sent)
        sent += len(parts.content)
        return {"text": parts.content, "index": 0, "logprobs": logprobs, "finish_reason": reason}

    def chunk(parts: Parts) -> Body:
        return envelope([choice(parts, None)])

    def final(parts: Parts, done: protocol.Done) -> Bodies:
        last = envelope([choice(parts, convert.finish_reason(done, False))])
        if not req.stream:
            return {**last, "usage": convert.usage(done)}
        return [last, {**envelope([]), "usage": convert.usage(done)}] if usage else last

    return await respond(request, bodies(request, run, req.stream, chunk, final), req.stream,
                         SSE_FRAMING)


def _messages(raw: Any) -> list[dict[str, Any]]:
    """OpenAI messages as native ones: text parts joined, image parts as images (which a text
    model refuses), `developer` as system, tool-call arguments parsed from their JSON text,
    `reasoning` as thinking (as Ollama's /v1 takes it)."""
    if not isinstance(raw, list):
        raise errors.BadRequest("messages must be a list")
    out = []
    for i, msg in enumerate(raw):
        if not isinstance(msg, dict):
            raise errors.BadRequest(f"messages[{i}] must be an object")
        fields.check_message(msg, i)
        native: dict[str, Any] = {"role": "system" if msg.get("role") == "developer"
                                  else msg.get("role"), "content": msg.get("content") or ""}
        if isinstance(native["content"], list):
            native["content"], native["images"] = _content_parts(i, native["content"])
        calls = msg.get("tool_calls")
        if calls:
            if not isinstance(calls, list):
                raise errors.BadRequest(f"messages[{i}].tool_calls must be a list")
            native["tool_calls"] = [_tool_call(i, call) for call in calls]
        if msg.get("tool_call_id"):
            native["tool_call_id"] = msg["tool_call_id"]
        if msg.get("reasoning"):
            if not isinstance(msg["reasoning"], str):
                raise errors.BadRequest(f"messages[{i}].reasoning must be a string")
            native["thinking"] = msg["reasoning"]
        if msg.get("role") == "tool":
            # As Ollama's FromChatRequest: the message's name, else the name of the call its
            # tool_call_id answers (SDK tool messages carry only the id).
            name = msg.get("name") or _called(raw, msg.get("tool_call_id"))
            if name:
                native["tool_name"] = name
        out.append(native)
    return out


def _called(messages: list[Any], call_id: Any) -> str:
    """The function name of the call with this id, the last one where ids repeat."""
    for msg in reversed(messages):
        for call in (msg.get("tool_calls") or []) if isinstance(msg, dict) else []:
            if isinstance(call, dict) and call_id and call.get("id") == call_id:
                function = call.get("function")
                name = function.get("name") if isinstance(function, dict) else None
                return name if isinstance(name, str) else ""
    return ""


def _content_parts(i: int, parts: list[Any]) -> tuple[str, list[str]]:
    """The text of a message's content parts, and its images in base64."""
    texts, images = [], []
    for j, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise errors.BadRequest(f"messages[{i}].content[{j}].text must be a string")
            texts.append(part["text"])
        elif kind == "image_url":
            images.append(convert.image_data(part.get("image_url")))
        else:
            raise errors.BadRequest(f"messages[{i}].content[{j}] must be a text or image_url part")
    return "".join(texts), images


def _tool_call(i: int, call: Any) -> dict[str, Any]:
    function = call.get("function") if isinstance(call, dict) else None
    if not isinstance(function, dict):
        raise errors.BadRequest(f"messages[{i}].tool_calls must hold function calls")
    arguments = function.get("arguments") or "{}"
    if isinstance(arguments, str):
        try:
            arguments = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            raise errors.BadRequest(f"messages[{i}].tool_calls: arguments are not JSON") from None
    native: dict[str, Any] = {"function": {"name": function.get("name"), "arguments": arguments}}
    if isinstance(call.get("id"), str) and call["id"]:
        native["id"] = call["id"]  # a template may name it (`.ID`), as it answers to it
    return native

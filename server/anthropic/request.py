"""An Anthropic Messages request as the native chat request.

Issue 19's rule, stricter than Ollama (which ignores what it does not know): every field is
implemented, or accepted without effect for a stated reason (`NO_EFFECT`; inside blocks, tools
and `thinking`, beside the sets that list their fields), or refused with a 400 naming it. The
same holds inside content blocks, tool definitions, `thinking`, `tool_choice` and
`output_config`. A null value counts as absent, as everywhere in corral.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterable

from server import errors
from server.schemas import ChatRequest
from server.toolchoice import ForcedCall, forced
from workers.protocol import ChatMessage

# Fields accepted without effect, with the reason (Ollama ignores each of them too); each also
# appears in the OpenAPI document.
NO_EFFECT = {
    "metadata": "its user_id identifies the end user to Anthropic's abuse checks; corral has none",
    "cache_control": "prompt caching is automatic: a prompt reuses the KV cells of the longest "
                     "start it shares with an earlier one (also on blocks and tools)",
    "context_management": "Anthropic's server-side clearing of old tool results and thinking; "
                          "corral cuts a history that outgrows num_ctx oldest-first instead",
    "service_tier": "one tier: every request waits in its model's line alike",
    "inference_geo": "the answer is computed where the server runs",
    "speed": "one speed: every request is batched alike",
}
_IMPLEMENTED = {"model", "messages", "max_tokens", "system", "stream", "temperature", "top_p",
                "top_k", "stop_sequences", "tools", "tool_choice", "thinking", "output_config"}
# Sampling fields and the native options they set.
_OPTIONS = {"temperature": "temperature", "top_p": "top_p", "top_k": "top_k"}

# The block types each role may send, and the fields of each (beside `type` and
# `cache_control`, which every block and tool may carry). Accepted without effect, as by Ollama:
# `cache_control` (as the top-level one); a tool_result's `is_error` (its text says what went
# wrong; a native tool message has no such flag); a thinking block's `signature` (corral signs
# nothing; the block's text goes back as the assistant's thinking).
_BLOCKS = {"user": ("text", "image", "tool_result"),
           "assistant": ("text", "thinking", "tool_use")}
_BLOCK_FIELDS = {"text": {"text"}, "image": {"source"},
                 "tool_result": {"tool_use_id", "content", "is_error"},
                 "thinking": {"thinking", "signature"}, "tool_use": {"id", "name", "input"}}
_TOOL_FIELDS = {"type", "name", "description", "input_schema", "cache_control"}
_THINKING_FIELDS = {"enabled": {"type", "budget_tokens", "display"},
                    "adaptive": {"type", "display"}, "disabled": {"type"}}
_TOOL_CHOICE_FIELDS = {"auto": {"type", "disable_parallel_tool_use"},
                       "any": {"type", "disable_parallel_tool_use"},
                       "tool": {"type", "name", "disable_parallel_tool_use"}, "none": {"type"}}
# Ollama's reading of output_config.effort (its anthropic.FromMessagesRequest).
_EFFORTS = {"low": "low", "medium": "medium", "high": "high", "xhigh": "high", "max": "max"}
# Claude Code starts its system prompt with this line; its `cch=` hash changes with every
# request, so kept it would end the prompt start two requests share at its first tokens and
# no KV cells would be reused (llama-server normalizes it for the same reason). It is
# attribution for Anthropic's billing, nothing the model needs.
_BILLING_LINE = re.compile(r"^x-anthropic-billing-header:[^\n]*\n?", re.MULTILINE)


@dataclass
class MessagesRequest:
    chat: ChatRequest
    show_thinking: bool  # False for thinking.display "omitted": no thinking blocks come back
    call: ForcedCall | None  # tool_choice any or tool: the answer is held to a call
    one_call: bool  # tool_choice.disable_parallel_tool_use: at most one tool_use block


def parse(body: dict[str, Any]) -> MessagesRequest:
    """The request as the native chat request (400 naming a field that is wrong or refused)."""
    _only(body, "", _IMPLEMENTED | set(NO_EFFECT))
    tools = _tools(body)
    kind, call, one_call = _tool_choice(body, tools)
    thinking, output = _object(body, "thinking"), _object(body, "output_config")
    stream = body.get("stream")
    native = {"model": body.get("model"), "stream": False if stream is None else stream,
              "options": _options(body),
              "messages": _system(body.get("system")) + _conversation(body.get("messages")),
              "tools": [] if kind == "none" else tools,
              "think": _think(thinking, output), "format": _format(output)}
    return MessagesRequest(ChatRequest.parse(native), thinking.get("display") != "omitted",
                           call, one_call)


def _only(obj: dict[str, Any], where: str, allowed: set[str]) -> None:
    for key, value in obj.items():
        if key not in allowed and value is not None:
            raise errors.BadRequest(f"{where}{key}: not supported")


def _object(body: dict[str, Any], key: str) -> dict[str, Any]:
    value = body.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise errors.BadRequest(f"{key}: must be an object")
    return value


def _one_of(value: Any, allowed: Iterable[str], where: str) -> str:
    names = [f'"{name}"' for name in allowed]
    if not isinstance(value, str) or f'"{value}"' not in names:
        raise errors.BadRequest(f"{where}: must be {', '.join(names[:-1])} or {names[-1]}")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise errors.BadRequest(f"{where}: must be a string")
    return value


def _options(body: dict[str, Any]) -> dict[str, Any]:
    limit = body.get("max_tokens")
    if limit is None:  # Anthropic requires it, and says so in these words
        raise errors.BadRequest("max_tokens: Field required")
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise errors.BadRequest("max_tokens: must be a positive integer")
    options = {native: body[name] for name, native in _OPTIONS.items()
               if body.get(name) is not None}
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
            raise errors.BadRequest("stop_sequences: must be a list of strings")
        options["stop"] = stops
    return {**options, "num_predict": limit}


def _system(value: Any) -> list[ChatMessage]:
    """`system`, a string or text blocks (joined with nothing between, as Ollama and
    llama-server join them), as the first native message."""
    if value is None:
        return []
    texts = [value] if isinstance(value, str) else _texts(value, "system")
    text = "".join(_BILLING_LINE.sub("", t) for t in texts)  # each: blocks join with no newline
    return [{"role": "system", "content": text}] if text else []


def _texts(blocks: Any, where: str) -> list[str]:
    """The text of a list of text blocks."""
    if not isinstance(blocks, list):
        raise errors.BadRequest(f"{where}: must be a string or a list of text blocks")
    return [_text_block(block, f"{where}[{i}]") for i, block in enumerate(blocks)]


def _text_block(block: Any, where: str) -> str:
    kind = _block_type(block, where)
    if kind != "text":
        raise errors.BadRequest(f'{where}.type: must be "text"')
    _only(block, f"{where}.", {"type", "cache_control", "text"})
    return _string(block.get("text"), f"{where}.text")


def _block_type(block: Any, where: str) -> str:
    if not isinstance(block, dict):
        raise errors.BadRequest(f"{where}: must be an object")
    return _string(block.get("type"), f"{where}.type")


def _conversation(raw: Any) -> list[ChatMessage]:
    if not isinstance(raw, list) or not raw:
        raise errors.BadRequest("messages: at least one message is required")
    names: dict[str, str] = {}  # tool_use id → tool name, for the results that answer them
    out: list[ChatMessage] = []
    for i, msg in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise errors.BadRequest(f"{where}: must be an object")
        _only(msg, f"{where}.", {"role", "content"})
        role = _one_of(msg.get("role"), _BLOCKS, f"{where}.role")
        blocks = _blocks(msg.get("content"), role, f"{where}.content")
        out += _assistant(blocks, names) if role == "assistant" else _user(blocks, names)
    return out


def _blocks(content: Any, role: str, where: str) -> list[dict[str, Any]]:
    """A message's content as checked blocks (a string is one text block; a tool result's
    content is made its text)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise errors.BadRequest(f"{where}: must be a string or a list of content blocks")
    return [_block(block, role, f"{where}[{j}]") for j, block in enumerate(content)]


def _block(block: Any, role: str, where: str) -> dict[str, Any]:
    kind = _block_type(block, where)
    if kind not in _BLOCKS[role]:
        raise errors.BadRequest(f'{where}.type: "{kind}" blocks are not supported in {role} '
                                "messages")
    _only(block, f"{where}.", {"type", "cache_control"} | _BLOCK_FIELDS[kind])
    if kind == "image":
        return {"type": "image", "data": _image_data(block.get("source"), f"{where}.source")}
    if kind == "tool_result":
        _string(block.get("tool_use_id"), f"{where}.tool_use_id")
        return {**block, "content": _tool_result_text(block.get("content"), f"{where}.content")}
    if kind == "tool_use":
        _string(block.get("id"), f"{where}.id")
        _string(block.get("name"), f"{where}.name")
        if not isinstance(block.get("input"), dict):
            raise errors.BadRequest(f"{where}.input: must be an object")
    else:  # text or thinking: the field of that name
        _string(block.get(kind), f"{where}.{kind}")
    return block


def _image_data(source: Any, where: str) -> str:
    """An image block's base64 data; a URL source is refused, as Ollama refuses image URLs."""
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "url":
        raise errors.BadRequest(f"{where}: image URLs are not currently supported, please use "
                                "base64 encoded data instead")
    if kind != "base64":
        raise errors.BadRequest(f'{where}.type: must be "base64"')
    _only(source, f"{where}.", {"type", "media_type", "data"})
    return _string(source.get("data"), f"{where}.data")


def _tool_result_text(content: Any, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(_texts(content, where))


def _assistant(blocks: list[dict[str, Any]], names: dict[str, str]) -> list[ChatMessage]:
    message: ChatMessage = {"role": "assistant", "content": "".join(
        b["text"] for b in blocks if b["type"] == "text")}
    thinking = "".join(b["thinking"] for b in blocks if b["type"] == "thinking")
    if thinking:
        message["thinking"] = thinking
    calls = [b for b in blocks if b["type"] == "tool_use"]
    if calls:
        names.update((b["id"], b["name"]) for b in calls)
        message["tool_calls"] = [{"id": b["id"], "function": {"name": b["name"],
                                                              "arguments": b["input"]}}
                                 for b in calls]
    return [message]


def _user(blocks: list[dict[str, Any]], names: dict[str, str]) -> list[ChatMessage]:
    """Tool results as native tool messages, then the text as a user message (Ollama's order:
    the results answer the calls of the assistant message just before). `is_error` has no
    native counterpart; the result's text says what went wrong, as Ollama lets it."""
    out: list[ChatMessage] = []
    for block in blocks:
        if block["type"] == "tool_result":
            result: ChatMessage = {"role": "tool", "content": block["content"],
                                   "tool_call_id": block["tool_use_id"]}
            if block["tool_use_id"] in names:
                result["tool_name"] = names[block["tool_use_id"]]
            out.append(result)
    texts = [b["text"] for b in blocks if b["type"] == "text"]
    images = [b["data"] for b in blocks if b["type"] == "image"]
    if texts or images or not out:
        message: ChatMessage = {"role": "user", "content": "".join(texts)}
        if images:
            message["images"] = images
        out.append(message)
    return out


def _tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    """Anthropic's client tools as native function tools."""
    raw = body.get("tools")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise errors.BadRequest("tools: must be a list")
    tools = []
    for i, tool in enumerate(raw):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise errors.BadRequest(f"{where}: must be an object")
        if tool.get("type") not in (None, "custom"):  # web search, bash, editor: Anthropic's own
            raise errors.BadRequest(f'{where}.type: server tool "{tool["type"]}" is not supported')
        _only(tool, f"{where}.", _TOOL_FIELDS)
        if not isinstance(tool.get("input_schema"), dict):
            raise errors.BadRequest(f"{where}.input_schema: must be an object")
        function = {"name": _string(tool.get("name"), f"{where}.name"),
                    "parameters": tool["input_schema"]}
        if tool.get("description") is not None:
            function["description"] = _string(tool["description"], f"{where}.description")
        tools.append({"type": "function", "function": function})
    return tools


def _tool_choice(body: dict[str, Any],
                 tools: list[dict[str, Any]]) -> tuple[str, ForcedCall | None, bool]:
    """`tool_choice`: its type, the call it forces, and whether at most one call may come back.
    `auto` leaves the model free and `none` offers it no tools; `any` and `tool` hold the answer
    to a call of any tool or of the named one, as /v1's "required" and named function do
    (server/toolchoice.py: a grammar, so even a model that would not call does).
    `disable_parallel_tool_use` keeps only the first call (a forced call is one call anyway)."""
    if body.get("tool_choice") is None:
        return "auto", None, False
    choice = _object(body, "tool_choice")
    kind = _one_of(choice.get("type"), _TOOL_CHOICE_FIELDS, "tool_choice.type")
    _only(choice, "tool_choice.", _TOOL_CHOICE_FIELDS[kind])
    one_call = choice.get("disable_parallel_tool_use")
    if one_call is not None and not isinstance(one_call, bool):
        raise errors.BadRequest("tool_choice.disable_parallel_tool_use: must be a boolean")
    call = None
    if kind == "any":
        call = forced(tools, None)
    elif kind == "tool":
        call = forced(tools, _string(choice.get("name"), "tool_choice.name"))
    return kind, call, bool(one_call)


def _think(thinking: dict[str, Any], output: dict[str, Any]) -> bool | str | None:
    """`thinking` and `output_config.effort` as the native `think`: disabled is false; an effort
    is its level; enabled without one is true; otherwise the model's default. budget_tokens is
    not enforced (the model thinks until it closes its thinking block; max_tokens bounds thinking
    and text together), as in Ollama."""
    kind = _one_of(thinking.get("type"), _THINKING_FIELDS, "thinking.type") if thinking else None
    _only(thinking, "thinking.", _THINKING_FIELDS.get(kind, set()))
    if kind == "enabled":
        budget = thinking.get("budget_tokens")
        if isinstance(budget, bool) or not isinstance(budget, int):
            raise errors.BadRequest("thinking.budget_tokens: must be an integer")
    if thinking.get("display") is not None:
        _one_of(thinking["display"], ("summarized", "omitted"), "thinking.display")
    effort = output.get("effort")
    if effort is not None:
        _one_of(effort, _EFFORTS, "output_config.effort")
    if kind == "disabled":
        return False
    if effort is not None:
        return _EFFORTS[effort]
    return True if kind == "enabled" else None


def _format(output: dict[str, Any]) -> dict[str, Any] | None:
    """`output_config.format` (structured outputs) as the native `format`: a JSON schema the
    answer's grammar follows."""
    _only(output, "output_config.", {"effort", "format"})
    spec = output.get("format")
    if spec is None:
        return None
    if not isinstance(spec, dict) or spec.get("type") != "json_schema" \
            or not isinstance(spec.get("schema"), dict):
        raise errors.BadRequest('output_config.format: must be {"type": "json_schema", '
                                '"schema": {...}}')
    _only(spec, "output_config.format.", {"type", "schema"})
    return spec["schema"]

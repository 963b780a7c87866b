"""The body of POST /v1/responses checked and translated into a native chat request.

The instructions and input items become native chat messages; tools, tool_choice, text.format,
reasoning.effort, max_output_tokens and the sampling fields become the native request's. Every
field is either acted on, refused while it holds anything but its stateless value (nothing is
stored, as in Ollama), or listed in NO_EFFECT with the reason it changes nothing; any other
field that is not null is a 400 naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from server import errors
from server.openai import convert
from server.schemas import ChatRequest, _typed, refuse_unknown
from server.toolchoice import ForcedCall, forced
from workers.protocol import OutputFormat

# The fields corral acts on.
IMPLEMENTED = frozenset({
    "model", "input", "instructions", "tools", "tool_choice", "stream", "max_output_tokens",
    "temperature", "top_p", "reasoning", "text", "truncation"})
# The fields that ask for state, and the one value of each that asks for none: nothing is
# stored, so nothing can be continued, referred to or run later.
STATELESS: dict[str, Any] = {"previous_response_id": None, "conversation": None, "prompt": None,
                             "store": False, "background": False}
# The fields taken without effect: each one's type and why it has none (Ollama takes them all
# without effect too).
NO_EFFECT: dict[str, tuple[type, str]] = {
    "metadata": (dict, "the client's own labels: echoed in the response, as OpenAI does"),
    "include": (list, '"reasoning.encrypted_content" only: the whole thinking comes back in the '
                      "reasoning item's summary, which a stateless client sends back as it is; "
                      "there is nothing encrypted to add"),
    "parallel_tool_calls": (bool, "a forced tool choice (required, a named function) is one "
                                  "call; otherwise every call the model writes comes back "
                                  "(echoed)"),
    "top_logprobs": (int, "0 only: /v1/responses does not give logprobs yet"),
    "prompt_cache_key": (str, "prompts share KV cells by their common start, without a key "
                              "(echoed)"),
    "safety_identifier": (str, "no abuse monitoring to inform (echoed)"),
    "user": (str, "no abuse monitoring to inform (echoed)"),
    "service_tier": (str, "one tier; the reply says default"),
    "stream_options": (dict, "include_obfuscation pads deltas against network observers of "
                             "OpenAI's service; nothing to pad here"),
}
_INCLUDABLE = ("reasoning.encrypted_content",)
# The keys of the nested objects; those after the comment have no effect, for its reason.
_REASONING_KEYS = {"effort",
                   "summary", "generate_summary"}  # no summariser: the whole thinking comes back
_TEXT_KEYS = {"format"}
_FORMAT_KEYS = {"type", "schema",
                "name", "description", "strict"}  # labels; a schema always holds the answer
_TOOL_KEYS = {"type", "name", "description", "parameters",
              "strict"}  # arguments match the schema only where tool_choice forces the call
_NAMESPACE_KEYS = {"type", "name", "description", "tools"}
_STREAM_OPTION_KEYS = {"include_obfuscation"}
# Input items and their parts: `id`, `status`, `phase`, annotations and logprobs label output
# a client sends back; a reasoning item's encrypted_content is another server's opaque state.
_ITEM_KEYS = {"message": {"type", "role", "content", "id", "status", "phase"},
              "function_call": {"type", "call_id", "name", "arguments", "id", "status",
                                "namespace"},
              "function_call_output": {"type", "call_id", "output", "id", "status"},
              "reasoning": {"type", "content", "id", "status", "summary", "encrypted_content"}}
_PART_KEYS = {"input_text": {"type", "text"},
              "output_text": {"type", "text", "annotations", "logprobs"},
              "reasoning_text": {"type", "text"},
              "summary_text": {"type", "text"}}
_TEXT_PARTS = ("input_text", "output_text")
_TOOL_CHOICES = ("none", "auto", "required")
_SUMMARIES = ("auto", "concise", "detailed")
_ROLES = {"user": "user", "assistant": "assistant", "system": "system", "developer": "system"}


@dataclass
class ResponsesRequest:
    chat: ChatRequest  # what runs
    call: ForcedCall | None  # the tool call tool_choice holds the answer to, if any
    echo: dict[str, Any]  # the request's settings, as the response object repeats them


def parse_request(body: dict[str, Any]) -> ResponsesRequest:
    """The body checked and translated into a native chat request; 400 naming what is wrong."""
    refuse_unknown(body, IMPLEMENTED | STATELESS.keys() | NO_EFFECT.keys(), "")
    _refuse_state(body)
    _check_no_effect(body)
    tools = _tools(body)
    tool_choice = _tool_choice(body)
    output_format, text = _text(body)
    truncation = _typed(body, "truncation", str, "auto")
    if truncation not in ("auto", "disabled"):
        raise errors.BadRequest('truncation must be "auto" or "disabled"')
    messages = _instructions(body) + _input(body.get("input"))
    if not messages:
        raise errors.BadRequest("input must not be empty")
    _typed(body, "stream", bool, False)  # convert.common takes anything but true as false
    # model, stream, temperature, top_p, reasoning.effort as think, max_output_tokens
    native = convert.common(body, limits=("max_output_tokens",),
                            defaults=convert.RESPONSES_DEFAULTS)
    chat = ChatRequest.parse({
        **native, "messages": messages, "format": output_format,
        "truncate": truncation == "auto",
        "tools": [] if tool_choice == "none" else [
            native for tool in tools for native in _native_tools(tool)]})
    echo = {
        "instructions": body.get("instructions"), "tools": tools, "tool_choice": tool_choice,
        "parallel_tool_calls": _typed(body, "parallel_tool_calls", bool, True),
        "max_output_tokens": body.get("max_output_tokens"), "reasoning": _reasoning(body),
        "text": text, "truncation": truncation, "metadata": _metadata(body),
        "previous_response_id": None, "store": False, "background": False,
        "service_tier": "default", "top_logprobs": 0, "user": body.get("user"),
        "safety_identifier": body.get("safety_identifier"),
        "prompt_cache_key": body.get("prompt_cache_key"),
    }
    return ResponsesRequest(chat, _forced_call(tool_choice, chat.tools), echo)


def _refuse_state(body: dict[str, Any]) -> None:
    """Nothing is stored, so nothing can be continued: the client sends the conversation."""
    for key, stateless in STATELESS.items():
        value = _typed(body, key, bool, None) if isinstance(stateless, bool) else body.get(key)
        if value is not None and value != stateless:
            what = f"{key}: {orjson.dumps(value).decode()}" if isinstance(value, bool) else key
            raise errors.BadRequest(
                f"{what} is not supported: responses are not stored (corral serves "
                "/v1/responses stateless, as Ollama does); send the whole conversation as input")


def _check_no_effect(body: dict[str, Any]) -> None:
    for key, (kind, _) in NO_EFFECT.items():
        _typed(body, key, kind, None)
    for value in body.get("include") or ():
        if value not in _INCLUDABLE:
            raise errors.BadRequest(f'include value "{value}" is not supported')
    if body.get("top_logprobs"):
        raise errors.BadRequest("top_logprobs is not supported yet on /v1/responses")
    refuse_unknown(body.get("stream_options") or {}, _STREAM_OPTION_KEYS, "stream_options.")


def _metadata(body: dict[str, Any]) -> dict[str, str]:
    metadata = _typed(body, "metadata", dict, {})
    if not all(isinstance(value, str) for value in metadata.values()):
        raise errors.BadRequest("metadata values must be strings")
    return metadata


def _reasoning(body: dict[str, Any]) -> dict[str, Any] | None:
    """The reasoning settings echoed (convert.common maps the effort to think)."""
    reasoning = _typed(body, "reasoning", dict, None)
    if reasoning is None:
        return None
    refuse_unknown(reasoning, _REASONING_KEYS, "reasoning.")
    summary = reasoning.get("summary") or reasoning.get("generate_summary")
    if summary is not None and summary not in _SUMMARIES:
        raise errors.BadRequest('reasoning.summary must be "auto", "concise" or "detailed"')
    return {"effort": reasoning.get("effort"), "summary": summary}


def _text(body: dict[str, Any]) -> tuple[OutputFormat, dict[str, Any]]:
    """`text.format` as the native `format` ("json" or a schema), and the text settings
    echoed."""
    text = _typed(body, "text", dict, {})
    refuse_unknown(text, _TEXT_KEYS, "text.")
    spec = text.get("format") or {"type": "text"}
    if not isinstance(spec, dict):
        raise errors.BadRequest("text.format must be an object")
    refuse_unknown(spec, _FORMAT_KEYS, "text.format.")
    kind = spec.get("type")
    if kind == "text":
        return None, {"format": spec}
    if kind == "json_object":
        return "json", {"format": spec}
    if kind == "json_schema":
        if not isinstance(spec.get("schema"), dict):
            raise errors.BadRequest("text.format.schema must be an object")
        return spec["schema"], {"format": spec}
    raise errors.BadRequest('text.format.type must be "text", "json_object" or "json_schema"')


def _tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The function tools and namespaces of them, in OpenAI's flat shape (checked; echoed as
    given)."""
    tools = _typed(body, "tools", list, [])
    for i, tool in enumerate(tools):
        _check_tool(tool, f"tools[{i}]")
    return tools


def _check_tool(tool: Any, where: str) -> None:
    kind = tool.get("type") if isinstance(tool, dict) else None
    if kind == "namespace":  # a group of functions (Codex sends its MCP servers' tools so)
        refuse_unknown(tool, _NAMESPACE_KEYS, f"{where}.")
        if not isinstance(tool.get("name", ""), str):
            raise errors.BadRequest(f"{where}.name must be a string")
        members = tool.get("tools")
        if not isinstance(members, list):
            raise errors.BadRequest(f"{where}.tools must be a list")
        for j, member in enumerate(members):
            _check_tool(member, f"{where}.tools[{j}]")
        return
    if kind != "function":
        raise errors.BadRequest(f'{where}: tool type "{kind}" is not supported; only '
                                '"function" tools and "namespace" groups of them are')
    refuse_unknown(tool, _TOOL_KEYS, f"{where}.")
    if not isinstance(tool.get("name"), str) or not tool["name"]:
        raise errors.BadRequest(f"{where}.name must be a non-empty string")
    if tool.get("parameters") is not None and not isinstance(tool["parameters"], dict):
        raise errors.BadRequest(f"{where}.parameters must be an object")


def _native_tools(tool: dict[str, Any]) -> list[dict[str, Any]]:
    """A flat Responses tool as the native one, nested under `function`; a namespace as its
    members named `namespace.member`, as Ollama's convertTools expands it (a native tool has
    a flat name only)."""
    if tool["type"] == "namespace":
        prefix = f"{tool['name']}." if tool.get("name") else ""
        natives = [native for member in tool["tools"] for native in _native_tools(member)]
        for native in natives:
            if not native["function"]["name"].startswith(prefix):
                native["function"]["name"] = prefix + native["function"]["name"]
        return natives
    function = {key: tool[key] for key in ("name", "description", "parameters")
                if tool.get(key) is not None}
    return [{"type": "function", "function": function}]


def _tool_choice(body: dict[str, Any]) -> str | dict[str, str]:
    """`none`, `auto` (the default), `required`, or `{"type": "function", "name": ...}` (flat,
    unlike chat's), as the response repeats it."""
    choice = body.get("tool_choice")
    if choice is None:
        return "auto"
    if choice in _TOOL_CHOICES:
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function" and set(choice) == {
            "type", "name"} and isinstance(choice["name"], str):
        return {"type": "function", "name": choice["name"]}
    raise errors.BadRequest('tool_choice must be "none", "auto", "required" or '
                            '{"type": "function", "name": ...}')


def _forced_call(choice: str | dict[str, str], tools: list[dict[str, Any]]) -> ForcedCall | None:
    """"none" and "auto" leave the model free (without the tools, or with them); "required"
    and a named function hold it to one call (server/toolchoice.py)."""
    if choice in ("none", "auto"):
        return None
    return forced(tools, choice["name"] if isinstance(choice, dict) else None)


def _instructions(body: dict[str, Any]) -> list[dict[str, Any]]:
    instructions = _typed(body, "instructions", str, "")
    return [{"role": "system", "content": instructions}] if instructions else []


def _input(raw: Any) -> list[dict[str, Any]]:
    """The input as native chat messages: a string is one user message; a list holds messages,
    function calls (joined to the assistant turn they belong to), their outputs (tool
    messages), and reasoning (the thinking of the assistant turn after it)."""
    if raw is None:
        return []
    if isinstance(raw, str):
        return [{"role": "user", "content": raw}]
    if not isinstance(raw, list):
        raise errors.BadRequest("input must be a string or a list of items")
    messages: list[dict[str, Any]] = []
    thinking = ""  # a reasoning item's text, waiting for its assistant turn
    names: dict[str, str] = {}  # call id → function name, for the outputs answering the calls
    for i, item in enumerate(raw):
        where = f"input[{i}]"
        kind = _item_kind(where, item)
        if kind == "reasoning":
            thinking += _reasoning_text(where, item)
            continue
        if kind == "message":
            messages.append(_message(where, item))
        elif kind == "function_call":
            call = _function_call(where, item)
            names[call["id"]] = call["function"]["name"]
            if messages and messages[-1]["role"] == "assistant":  # the text of the same turn
                messages[-1].setdefault("tool_calls", []).append(call)
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        else:
            messages.append(_function_output(where, item, names))
        if thinking and messages[-1]["role"] == "assistant":
            messages[-1]["thinking"], thinking = thinking, ""
    if thinking:  # the last turn only thought (Ollama keeps it too)
        messages.append({"role": "assistant", "content": "", "thinking": thinking})
    return messages


def _item_kind(where: str, item: Any) -> str:
    """An item's type (a role alone makes a message, as OpenAI's shorthand); its keys checked."""
    if not isinstance(item, dict):
        raise errors.BadRequest(f"{where} must be an object")
    kind = item.get("type") or ("message" if "role" in item else None)
    if kind is None:
        raise errors.BadRequest(f"{where} needs a type or a role")
    if not isinstance(kind, str) or kind not in _ITEM_KEYS:
        raise errors.BadRequest(f'{where}: unknown input item type "{kind}"')
    refuse_unknown(item, _ITEM_KEYS[kind], f"{where}.")
    return kind


def _reasoning_text(where: str, item: dict[str, Any]) -> str:
    """A reasoning item's thinking: its reasoning text, else its summary (where corral's own
    reasoning items carry it)."""
    text = _text_of(f"{where}.content", item.get("content"), ("reasoning_text",))
    return text or _text_of(f"{where}.summary", item.get("summary"), ("summary_text",))


def _message(where: str, item: dict[str, Any]) -> dict[str, Any]:
    role = _ROLES.get(item["role"]) if isinstance(item.get("role"), str) else None
    if role is None:
        raise errors.BadRequest(f'{where} has invalid role "{item.get("role")}"; expected one '
                                "of user, assistant, system, developer")
    content = item.get("content")
    parts = content if isinstance(content, list) else []
    images = [_image(f"{where}.content[{j}]", part) for j, part in enumerate(parts)
              if isinstance(part, dict) and part.get("type") == "input_image"]
    if images and role != "user":
        raise errors.BadRequest(f"{where}: images come in user messages")
    texts = [p for p in parts if not (isinstance(p, dict) and p.get("type") == "input_image")]
    message = {"role": role, "content": _text_of(f"{where}.content",
                                                 texts if parts else content, _TEXT_PARTS)}
    return {**message, "images": images} if images else message


def _image(where: str, part: dict[str, Any]) -> str:
    """An input_image part's base64 data: a data: URL, as Ollama takes them (no file ids)."""
    refuse_unknown(part, {"type", "image_url", "detail"}, f"{where}.")
    return convert.image_data(part.get("image_url"), where)


def _text_of(where: str, content: Any, kinds: tuple[str, ...]) -> str:
    """A string, or the text of a list of parts of these kinds, joined."""
    if content is None or isinstance(content, str):
        return content or ""
    if not isinstance(content, list):
        raise errors.BadRequest(f"{where} must be a string or a list of parts")
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "input_file":
            raise errors.BadRequest(f"{where}[{j}]: file inputs are not supported")
        if kind not in kinds or not isinstance(part.get("text"), str):
            raise errors.BadRequest(f"{where}[{j}] must be a part of type "
                                    f"{' or '.join(kinds)} with its text")
        refuse_unknown(part, _PART_KEYS[kind], f"{where}[{j}].")
        texts.append(part["text"])
    return "".join(texts)


def _function_call(where: str, item: dict[str, Any]) -> dict[str, Any]:
    """A call the assistant made, as the native tool call (arguments parsed from JSON)."""
    call_id, name = item.get("call_id"), item.get("name")
    if not isinstance(call_id, str) or not isinstance(name, str) or not name:
        raise errors.BadRequest(f"{where}: a function_call needs call_id and name")
    try:
        arguments = orjson.loads(item.get("arguments") or "{}")
    except (orjson.JSONDecodeError, TypeError):
        arguments = None
    if not isinstance(arguments, dict):
        raise errors.BadRequest(f"{where}.arguments must be a JSON object, as a string")
    namespace = item.get("namespace")
    if isinstance(namespace, str) and namespace and not name.startswith(f"{namespace}."):
        name = f"{namespace}.{name}"  # the tool's name as its namespace's expansion gave it
    return {"id": call_id, "function": {"name": name, "arguments": arguments}}


def _function_output(where: str, item: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """A tool's result, as a native tool message naming the call it answers (and the tool,
    when that call is in the input)."""
    call_id = item.get("call_id")
    if not isinstance(call_id, str):
        raise errors.BadRequest(f"{where}: a function_call_output needs call_id")
    message = {"role": "tool", "tool_call_id": call_id,
               "content": _text_of(f"{where}.output", item.get("output"), _TEXT_PARTS)}
    if call_id in names:
        message["tool_name"] = names[call_id]
    return message

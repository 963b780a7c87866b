"""A model's JSON blobs (config, params, messages) byte for byte as Ollama writes them.

Ollama writes each with `json.NewEncoder(w).Encode(v)` (server/create.go: setParameters,
setMessages, createConfigLayer; server/model.go: detectChatTemplate): the text of Go's
encoding/json, which `workers.template.godata.go_json` writes (maps with sorted keys, `<`, `>`,
`&` escaped, numbers as float64 prints them), then the newline that Encode adds. Structs are
Ollama's types, fields in declaration order with their omitempty tags: model.ConfigV2
(types/model/config.go) and api.Message with its tool calls (api/types.go). So a model made
from the same input gets the same digests as with Ollama, in whatever order the request gave
its parameters.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

# Besides go_json, the Go struct and ordered map types that godata keeps to itself (its template
# values are built of them): imported, not declared a second time.
from workers.template.godata import GoField, OrderedMap, go_struct, go_json

# model.ConfigV2, as (JSON key, omitempty, Go zero value); `draft` is a model.Draft (below).
# `parent_model` is corral's, last: Ollama keeps the parent in the manifest's layers (`from`),
# which corral's manifests do not carry yet.
_CONFIG_FIELDS: tuple[tuple[str, bool, Any], ...] = (
    ("model_format", False, ""), ("model_family", False, ""), ("model_families", False, None),
    ("model_type", False, ""), ("file_type", False, ""), ("renderer", True, ""),
    ("parser", True, ""), ("requires", True, ""), ("remote_host", True, ""),
    ("remote_model", True, ""), ("capabilities", True, None), ("context_length", True, 0),
    ("embedding_length", True, 0), ("base_name", True, ""), ("draft", True, None),
    ("architecture", False, ""),
    ("os", False, ""), ("parent_model", True, ""))
_ConfigV2 = go_struct("ConfigV2", [GoField(key, key, "empty" if omit else "")
                                 for key, omit, _ in _CONFIG_FIELDS])
_DRAFT_FIELDS = ("model_format", "architecture", "tensor_prefix", "config")
_Draft = go_struct("Draft", [GoField(key, key, "empty") for key in _DRAFT_FIELDS])

# api.Message, api.ToolCall and api.ToolCallFunction.
_Message = go_struct("Message", [
    GoField("role", "role"), GoField("content", "content"),
    GoField("thinking", "thinking", "empty"), GoField("images", "images", "empty"),
    GoField("tool_calls", "tool_calls", "empty"), GoField("tool_name", "tool_name", "empty"),
    GoField("tool_call_id", "tool_call_id", "empty")])
_ToolCall = go_struct("ToolCall", [GoField("id", "id", "empty"), GoField("function", "function")])
_ToolCallFunction = go_struct("ToolCallFunction", [
    GoField("index", "index"), GoField("name", "name"), GoField("arguments", "arguments")])


def encode(value: Any) -> bytes:
    """What `json.NewEncoder(w).Encode(value)` writes."""
    return (go_json(value) + "\n").encode()


def params_blob(params: Mapping[str, Any]) -> bytes:
    """The params layer: Ollama's map[string]any, so keys sorted and every number a float64."""
    return encode(dict(params))


def config_blob(config: Mapping[str, Any]) -> bytes:
    """The config blob of a model whose ConfigV2 fields are `config` (JSON keys); a field it
    lacks is Go's zero value. A key ConfigV2 does not have is a ValueError, not dropped."""
    unknown = set(config) - {key for key, _, _ in _CONFIG_FIELDS}
    if unknown:
        raise ValueError(f"not fields of Ollama's model config: {sorted(unknown)}")
    fields = {key: config.get(key, zero) for key, _, zero in _CONFIG_FIELDS}
    if isinstance(draft := fields["draft"], Mapping):  # a *Draft: null when absent
        fields["draft"] = _Draft(**{key: str(draft.get(key) or "") for key in _DRAFT_FIELDS})
    return encode(_ConfigV2(**fields))


def messages_blob(messages: Sequence[Mapping[str, Any]]) -> bytes:
    """The messages layer: a list of api.Message."""
    return encode([_Message(
        role=msg["role"], content=msg.get("content") or "", thinking=msg.get("thinking"),
        images=msg.get("images"), tool_name=msg.get("tool_name"),
        tool_calls=[_tool_call(call) for call in msg.get("tool_calls") or ()],
        tool_call_id=msg.get("tool_call_id")) for msg in messages])


def _tool_call(call: Mapping[str, Any]) -> Any:
    function = call.get("function") or {}
    index = function.get("index")
    return _ToolCall(id=call.get("id"), function=_ToolCallFunction(
        index=index if isinstance(index, int) and not isinstance(index, bool) else 0,
        name=function.get("name") or "", arguments=_arguments(function.get("arguments"))))


def _arguments(raw: Any) -> Any:
    """api.ToolCallFunctionArguments: an object that keeps the order its keys came in (nested
    objects are plain maps, sorted); what is not an object is written as `{}`, as Go writes an
    empty one. Some clients send the object as a JSON string."""
    if isinstance(raw, str):
        try:
            raw = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raw = None
    return OrderedMap(raw.items()) if isinstance(raw, Mapping) else OrderedMap()

"""A request's `tool_choice`, enforced: a call of one of the tools (OpenAI's "required",
Anthropic's "any") or of the named one, with arguments that match its parameters' schema.

Ollama ignores tool_choice and llama-server honours only "required". Here the answer is held
by a grammar to the model's own tool-call syntax: the tag its template writes before calls
(workers/template/analysis.py), then `{"name": ..., "arguments": {...}}`, which the tool-call
parser (toolcalls.py) reads back; so even a model that would not call a tool on its own does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server import errors
from workers.template.analysis import analyze


@dataclass(frozen=True)
class ForcedCall:
    names: tuple[str, ...]  # the tools it may call: all of them, or the one named


def forced(tools: list[dict[str, Any]], name: str | None) -> ForcedCall:
    """A call of the tool `name`, or of any of `tools` when None; 400 for an unknown name."""
    known = tuple(t["function"]["name"] for t in tools)
    if not known:
        raise errors.BadRequest("tool_choice requires a tool call, but no tools were given")
    if name is None:
        return ForcedCall(known)
    if name not in known:
        raise errors.BadRequest(f'tool_choice names "{name}", which is not among the tools')
    return ForcedCall((name,))


def call_format(call: ForcedCall, tools: list[dict[str, Any]],
                template: str) -> tuple[dict[str, Any], str]:
    """The JSON schema of the call and the text before it (the template's tool-call tag)."""
    schemas = [_call_schema(t["function"]) for t in tools if t["function"]["name"] in call.names]
    schema = schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    tag = analyze(template).tool_call_tag
    return schema, "" if tag == "{" else tag


def _call_schema(function: dict[str, Any]) -> dict[str, Any]:
    parameters = function.get("parameters")
    return {"type": "object", "required": ["name", "arguments"], "properties": {
        "name": {"const": function["name"]},
        "arguments": parameters if isinstance(parameters, dict) else {"type": "object"}}}

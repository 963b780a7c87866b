"""Prompt rendering and truncation, done in the worker beside the tokenizer.

Templates are either Ollama Go templates (rendered with `gotpl`) or, when a model has none, the
GGUF's own Jinja chat template (rendered in jinja2's sandbox). A prompt that is too long for the
context is shortened the way Ollama does it: drop the oldest messages (system messages stay);
if the last message alone is still too long, the engine cuts tokens (see context.py).

Go templates see what Ollama gives them (template/template.go `Execute`):

- fill-in-the-middle (`prompt` and `suffix` both set): `.Prompt .Suffix .Response`;
- a template that mentions `.Messages`: `.System` (all system messages joined), `.Messages`
  (same-role runs merged, tool results kept apart; each with `.Role .Content .Thinking .Images
  .ToolCalls .ToolName .ToolCallID`), `.Tools` and `.Response` (empty);
- any other ("legacy") template is rendered once per turn with `.System .Prompt .Response`, and
  for the turn being generated only up to where it prints `.Response`.

All of them also get `.Think .ThinkLevel .IsThinkSet`. Tools and tool calls keep the shapes of
Ollama's template types, so `{{ .Function.Arguments }}`, `{{ .Tools }}` and `{{ . }}` inside
`range .Tools` print JSON exactly as Go's encoding/json writes it, and the functions `json`,
`currentDate`, `yesterdayDate` and `toTypeScriptType` exist beside Go's own (`slice`, `len`...).
"""

from __future__ import annotations

import base64
import datetime
import json
import math
import re
from dataclasses import dataclass, replace
from decimal import Decimal
from functools import lru_cache
from typing import Any, Callable, Iterable, Mapping, Sequence

import gotpl
from gotpl.parse import nodes as gonodes
from gotpl.parse import parse_template
from jinja2.sandbox import ImmutableSandboxedEnvironment

from workers.protocol import ChatMessage, PromptSpec

try:  # the value gotpl gives for a missing field; only compared against
    from gotpl.runtime.values import INVALID as _MISSING
except ImportError:  # pragma: no cover - a gotpl without it
    _MISSING = object()

Tokenize = Callable[[str, bool], list[int]]  # (text, add_bos) -> token ids


class TemplateError(ValueError):
    pass


def check_go_template(source: str) -> None:
    """Raises TemplateError if the text is not a valid Go template (used by /api/create)."""
    _compile(source)


# Templates come from requests and /api/create: each rendering gets a budget, so that a template
# like `{{range 1000000000}}` fails in about a second instead of spinning for minutes. A real chat
# history of 12,000 messages takes ~12,000 iterations; the time limit is the worker's (render.py).
BUDGET = gotpl.ExecutionBudget(max_output_chars=32 << 20, max_iterations=1_000_000,
                               max_template_depth=100)


# ---- Go's encoding/json --------------------------------------------------------------------


def go_json(value: Any) -> str:
    """`value` as Go's json.Marshal writes it: compact, map keys sorted, `<`, `>` and `&`
    escaped, numbers as float64 prints them, struct fields in declaration order."""
    if value is None or value is _MISSING:
        return "null"
    if isinstance(value, _GoStruct):
        return value._marshal()
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if abs(value) <= 1 << 53 else _go_float(float(value), for_json=True)
    if isinstance(value, float):
        return _go_float(value, for_json=True)
    if isinstance(value, str):
        return _json_string(value)
    if isinstance(value, (bytes, bytearray)):
        return '"' + base64.b64encode(bytes(value)).decode() + '"'
    if isinstance(value, _PropertyType):
        return go_json(value[0]) if len(value) == 1 else "[" + ",".join(map(go_json, value)) + "]"
    if isinstance(value, _GoList) and value.nil:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(go_json(item) for item in value) + "]"
    if isinstance(value, Mapping):
        if isinstance(value, _GoMap) and value.nil:
            return "null"
        keys = list(value) if isinstance(value, _OrderedMap) else sorted(value, key=str)
        return "{" + ",".join(f"{_json_string(str(k))}:{go_json(value[k])}" for k in keys) + "}"
    return _json_string(str(value))


_JSON_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b",
                 "\f": "\\f", "<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                 "\u2028": "\\u2028", "\u2029": "\\u2029"}
_JSON_SPECIAL = re.compile('["\\\\\x00-\x1f<>&\u2028\u2029\ud800-\udfff]')


def _json_string(text: str) -> str:
    def escape(match: re.Match[str]) -> str:
        char = match.group()
        if char in _JSON_ESCAPES:
            return _JSON_ESCAPES[char]
        if "\ud800" <= char <= "\udfff":  # a lone surrogate is not UTF-8: Go writes U+FFFD
            return "\ufffd"
        return f"\\u{ord(char):04x}"
    return '"' + _JSON_SPECIAL.sub(escape, text) + '"'


def _go_float(number: float, *, for_json: bool) -> str:
    """Shortest float64 text the way Go writes it: encoding/json (exponent below 1e-6 and from
    1e21, `e-7` not `e-07`) or fmt's %v (exponent below 1e-4 and from 1e21)."""
    if math.isnan(number) or math.isinf(number):
        if for_json:
            raise ValueError(f"json: unsupported value: {number}")
        return "NaN" if math.isnan(number) else ("+Inf" if number > 0 else "-Inf")
    if number == 0:
        return "-0" if math.copysign(1, number) < 0 else "0"
    exact = Decimal(repr(number)).normalize()
    sign, digits, exponent = exact.as_tuple()
    assert isinstance(exponent, int)
    point = exponent + len(digits) - 1  # the exponent in d.ddd form
    if (abs(number) < 1e-6 or abs(number) >= 1e21) if for_json else (point < -4 or point >= 21):
        mantissa = str(digits[0]) + ("." + "".join(map(str, digits[1:])) if len(digits) > 1 else "")
        width = 1 if for_json and point < 0 else 2
        return f"{'-' if sign else ''}{mantissa}e{'-' if point < 0 else '+'}{abs(point):0{width}d}"
    return format(exact, "f")


# ---- the values templates see --------------------------------------------------------------


class _Formats:
    """How gotpl's fmt prints our values: fmt's %v of them, and for the types with a String()
    method that string under the verbs v, s, q, x and X, as Go's fmt does."""

    __slots__ = ()

    def __go_format_value__(self, kind: str, mode: str, *, nested: bool) -> str:
        return type(self).__name__ if kind == "type" else _go_print(self)

    def __go_format__(self, spec: Any) -> str:
        text = _go_string(self)
        verb = spec.verb if text is not None and spec.verb in "vsqxX" else "v"
        directive = "%" + spec.flags + ("" if spec.width is None else str(spec.width)) + (
            "" if spec.precision is None else f".{spec.precision}") + verb
        return _PRINTF.render({"F": directive, "S": _go_print(self) if text is None else text})


_PRINTF = gotpl.Template("{{ printf .F .S }}")


class _GoList(_Formats, list):  # type: ignore[type-arg]
    """A Go slice; `nil` ones print as `[]` but marshal to `null`."""

    nil = False


class _NilList(_GoList):
    nil = True


class _Tools(_GoList):
    """Ollama's templateTools: a slice whose String() is its JSON."""


class _NilTools(_Tools):
    nil = True


class _PropertyType(_GoList):
    """api.PropertyType: one JSON Schema type or several."""


class _GoMap(_Formats, dict):  # type: ignore[type-arg]
    """A Go map (ranged in key order); `nil` ones marshal to `null`."""

    nil = False


class _StringerMap(_GoMap):
    """Ollama's templateArgs / templateProperties: maps whose String() is their JSON."""


class _NilStringerMap(_StringerMap):
    nil = True


class _OrderedMap(_GoMap):
    """api.ToolPropertiesMap: properties in the order the request gave them."""


@dataclass(frozen=True)
class _Field:
    name: str          # the Go field name templates use
    key: str | None    # the JSON key; None: the Go name (a struct without tags)
    omit: str = ""     # "empty" (omitempty on a value) or "nil" (omitempty on an interface)


class _GoStruct(_Formats):
    """A Go struct: exported fields as attributes, printed as fmt's %v prints it, marshalled as
    encoding/json does."""

    __slots__: tuple[str, ...] = ()
    _fields: tuple[_Field, ...] = ()
    _pointer = False  # printed as &{...}

    def __init__(self, **values: Any) -> None:
        for field in self._fields:
            setattr(self, field.name, values[field.name])

    def _marshal(self) -> str:
        parts = []
        for field in self._fields:
            value = getattr(self, field.name)
            if field.omit and _omitted(value, field.omit):
                continue
            parts.append(f"{_json_string(field.key or field.name)}:{go_json(value)}")
        return "{" + ",".join(parts) + "}"

    def __str__(self) -> str:
        return _go_print(self)


def _omitted(value: Any, how: str) -> bool:
    if value is None:
        return True
    if how == "nil":
        return False
    if isinstance(value, (str, list, tuple, dict)):
        return len(value) == 0
    return value is False or (isinstance(value, (int, float)) and value == 0)


def _struct(name: str, fields: Iterable[_Field], pointer: bool = False) -> type[_GoStruct]:
    fields = tuple(fields)
    return type(name, (_GoStruct,), {"__slots__": tuple(f.name for f in fields),
                                     "_fields": fields, "_pointer": pointer})


def _plain(*names: str) -> list[_Field]:
    return [_Field(name, None) for name in names]


# template.go's templateMessage (pointers in .Messages), templateToolCall and its function.
_Message = _struct("Message", _plain("Role", "Content", "Thinking", "Images", "ToolCalls",
                                     "ToolName", "ToolCallID"), pointer=True)
_ToolCall = _struct("ToolCall", _plain("ID", "Function"))
_ToolCallFunction = _struct("ToolCallFunction", _plain("Index", "Name", "Arguments"))
# template.go's templateTool (whose String() is its JSON), its function and parameters.
_Tool = _struct("Tool", [_Field("Type", "type"), _Field("Items", "items", "nil"),
                         _Field("Function", "function")])
_ToolFunction = _struct("ToolFunction", [_Field("Name", "name"), _Field("Description", "description"),
                                         _Field("Parameters", "parameters")])
_ToolParameters = _struct("ToolParameters", [
    _Field("Type", "type"), _Field("Defs", "$defs", "nil"), _Field("Items", "items", "nil"),
    _Field("Required", "required", "empty"), _Field("Properties", "properties")])
# api.ToolProperty, as the values of .Function.Parameters.Properties.
_ToolProperty = _struct("ToolProperty", [
    _Field("AnyOf", "anyOf", "empty"), _Field("Type", "type", "empty"),
    _Field("Items", "items", "nil"), _Field("Description", "description", "empty"),
    _Field("Enum", "enum", "empty"), _Field("Properties", "properties", "nil"),
    _Field("Required", "required", "empty")])


def _go_string(value: Any) -> str | None:
    """What the value's String() method returns, for the types that have one; else None."""
    if isinstance(value, _Tool) or isinstance(value, _Tools):
        return go_json(value)
    if isinstance(value, _StringerMap):
        return "{}" if value.nil else go_json(value)
    if isinstance(value, _PropertyType):
        return value[0] if len(value) == 1 else _go_print(list(value)) if value else ""
    return None


def _go_print(value: Any) -> str:
    """fmt's %v, for the values inside the structs above."""
    text = _go_string(value)
    if text is not None:
        return text
    if value is None or value is _MISSING:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _go_float(value, for_json=False)
    if isinstance(value, (str, int)):
        return str(value)
    if isinstance(value, _GoStruct):
        inner = " ".join(_go_print(getattr(value, f.name)) for f in value._fields)
        return ("&{" if value._pointer else "{") + inner + "}"
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{_go_print(k)}:{_go_print(value[k])}"
                                 for k in sorted(value, key=str)) + "]"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(map(_go_print, value)) + "]"
    return str(value)


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _strings(value: Any) -> _GoList:
    if not isinstance(value, (list, tuple)):
        return _NilList()
    return _GoList(str(item) for item in value)


def _tool_property(raw: Any) -> Any:
    """api.ToolProperty from its JSON; keys it does not have are dropped, as Go drops them."""
    prop = _mapping(raw)
    kind = prop.get("type")
    nested = prop.get("properties")
    return _ToolProperty(
        AnyOf=_GoList(_tool_property(p) for p in prop.get("anyOf") or ()),
        Type=_PropertyType([kind] if isinstance(kind, str) else _strings(kind)),
        Items=prop.get("items"),
        Description=str(prop.get("description") or ""),
        Enum=_GoList(prop["enum"]) if isinstance(prop.get("enum"), list) else _NilList(),
        Properties=(_OrderedMap((str(k), _tool_property(v)) for k, v in nested.items())
                    if isinstance(nested, Mapping) else None),
        Required=_strings(prop.get("required")))


def template_tools(tools: Sequence[Mapping[str, Any]] | None) -> _Tools:
    """Request tools (Ollama's api.Tool JSON) as templates see them in `.Tools`."""
    if tools is None:
        return _NilTools()
    out = _Tools()
    for raw in tools:
        tool = _mapping(raw)
        function = _mapping(tool.get("function"))
        params = _mapping(function.get("parameters"))
        props = params.get("properties")
        out.append(_Tool(
            Type=str(tool.get("type") or ""), Items=tool.get("items"),
            Function=_ToolFunction(
                Name=str(function.get("name") or ""),
                Description=str(function.get("description") or ""),
                Parameters=_ToolParameters(
                    Type=str(params.get("type") or ""), Defs=params.get("$defs"),
                    Items=params.get("items"), Required=_strings(params.get("required")),
                    Properties=(_StringerMap((str(k), _tool_property(v)) for k, v in props.items())
                                if isinstance(props, Mapping) else _NilStringerMap())))))
    return out


def _arguments(raw: Any) -> _StringerMap:
    if isinstance(raw, str):  # some clients send the arguments as a JSON string
        try:
            raw = json.loads(raw)
        except ValueError:
            raw = None
    if not isinstance(raw, Mapping):
        return _NilStringerMap()
    return _StringerMap((str(k), v) for k, v in raw.items())


def _template_message(msg: Mapping[str, Any]) -> Any:
    calls = _GoList()
    for raw in msg.get("tool_calls") or ():
        call = _mapping(raw)
        function = _mapping(call.get("function"))
        index = function.get("index")
        calls.append(_ToolCall(ID=str(call.get("id") or ""), Function=_ToolCallFunction(
            Index=index if isinstance(index, int) else 0, Name=str(function.get("name") or ""),
            Arguments=_arguments(function.get("arguments")))))
    images = msg.get("images")
    return _Message(
        Role=msg["role"], Content=msg.get("content") or "", Thinking=msg.get("thinking") or "",
        Images=_GoList(images) if images else _NilList(), ToolCalls=calls or _NilList(),
        ToolName=msg.get("tool_name") or "", ToolCallID=msg.get("tool_call_id") or "")


def _think_values(think: bool | str | None) -> dict[str, Any]:
    """api.ThinkValue as the template sees it: a bool, or a level that also means on."""
    levels = ("high", "medium", "low", "max")
    enabled = think in levels if isinstance(think, str) else bool(think)
    level = think if isinstance(think, str) else ("medium" if think else "")
    return {"Think": enabled, "ThinkLevel": level, "IsThinkSet": think is not None}


# ---- template functions --------------------------------------------------------------------


def _json(value: Any = None) -> str:
    try:
        return go_json(value)
    except ValueError:  # Go's json func ignores the error and prints nothing
        return ""


def _current_date(*_format: str) -> str:
    return datetime.date.today().isoformat()


def _yesterday_date(*_format: str) -> str:
    return (datetime.date.today() - datetime.timedelta(days=1)).isoformat()


_TS_TYPES = {"string": "string", "number": "number", "integer": "number", "boolean": "boolean",
             "array": "any[]", "object": "Record<string, any>", "null": "null"}


def _typescript_type(value: Any = None) -> str:
    if not isinstance(value, _ToolProperty):
        return "any"
    prop: Any = value
    if prop.AnyOf:
        return " | ".join(_typescript_type(p) for p in prop.AnyOf)
    if not prop.Type:
        return "any"
    return " | ".join(_TS_TYPES.get(t, "any") for t in prop.Type)


def _print_value(value: Any) -> Any:
    """Wraps every printing action: a value with a String() method prints that, as in Go."""
    text = _go_string(value)
    return value if text is None else text


_PRINT = "_corralPrint"
FUNCTIONS: Mapping[str, Callable[..., Any]] = {
    "json": _json, "currentDate": _current_date, "yesterdayDate": _yesterday_date,
    "toTypeScriptType": _typescript_type, _PRINT: _print_value,
}


# ---- compiling -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Compiled:
    template: gotpl.Template       # the whole template, `.Response` added if it had none
    uses: frozenset[str]           # identifiers it mentions, lowercased (Ollama's Vars)
    cut: gotpl.Template | None     # legacy templates: only up to where `.Response` is printed


def _new_template(source: str) -> gotpl.Template:
    return gotpl.Template(source, functions=FUNCTIONS, budget=BUDGET)


@lru_cache(maxsize=64)
def _compile(source: str) -> _Compiled:
    try:
        _new_template(source)  # syntax errors point into the text as written
        uses = _identifiers(parse_template(source, functions=FUNCTIONS))
        if "messages" not in uses and "response" not in uses:
            source += "{{ .Response }}"  # Ollama appends it to such templates
        parsed = parse_template(source, functions=FUNCTIONS)
        template = _new_template(_wrap_printing(source, parsed))
        cut = None
        if "messages" not in uses:
            cut = _new_template(_serialize(parsed, _cut_after_response(parsed.root),
                                           source.encode()))
    except gotpl.TemplateError as exc:
        raise TemplateError(f"template error: {exc}") from None
    return _Compiled(template, uses, cut)


def _children(node: Any) -> Iterable[Any]:
    if isinstance(node, (gonodes.IfNode, gonodes.WithNode, gonodes.RangeNode)):
        yield node.body
        if node.else_body is not None:
            yield node.else_body
    elif isinstance(node, gonodes.ListNode):
        yield from node.nodes


def _identifiers(parsed: gonodes.ParsedTemplate) -> frozenset[str]:
    """The field and variable names a template mentions, lowercased: Ollama's Template.Vars,
    which decides between the `.Messages` and the per-turn rendering."""
    found: set[str] = set()

    def pipe(p: gonodes.PipeNode) -> None:
        for command in p.commands:
            for arg in command.arguments:
                if isinstance(arg, gonodes.FieldNode):
                    found.update(f.lower() for f in arg.fields)
                elif isinstance(arg, gonodes.VariableNode):
                    found.update(f.lower() for f in (arg.name, *arg.fields))
                elif isinstance(arg, gonodes.ParenthesizedNode) and not arg.fields:
                    pipe(arg.pipeline)  # Go skips a (pipeline).Field chain

    def walk(node: Any) -> None:
        if isinstance(node, gonodes.TemplateCallNode):
            if node.pipeline is None:  # Ollama rejects these
                raise TemplateError("template error: undefined template specified")
            pipe(node.pipeline)
        elif isinstance(node, (gonodes.ActionNode, gonodes.IfNode, gonodes.WithNode,
                               gonodes.RangeNode, gonodes.BlockNode)):
            pipe(node.pipeline)
        for child in _children(node):
            walk(child)

    walk(parsed.root)
    for definition in parsed.definitions:
        walk(definition.body)
    return frozenset(found)


def _printing_actions(node: Any) -> Iterable[gonodes.ActionNode]:
    if isinstance(node, gonodes.ActionNode):
        if not node.pipeline.declarations:
            yield node
    elif isinstance(node, gonodes.BlockNode):
        return  # its body is among the definitions
    for child in _children(node):
        yield from _printing_actions(child)


def _wrap_printing(source: str, parsed: gonodes.ParsedTemplate) -> str:
    """The source with every printing action `{{ P }}` turned into `{{ _corralPrint (P) }}`
    (node positions are UTF-8 byte offsets; everything else is kept byte for byte)."""
    data = source.encode()
    actions = list(_printing_actions(parsed.root))
    for definition in parsed.definitions:
        actions += _printing_actions(definition.body)
    for start, end in sorted({(a.pipeline.start, a.pipeline.end) for a in actions}, reverse=True):
        data = data[:start] + f"{_PRINT} (".encode() + data[start:end] + b")" + data[end:]
    return data.decode()


def _cut_after_response(root: gonodes.ListNode) -> gonodes.ListNode:
    """The template tree up to and including the first `.Response` field, as Ollama's
    deleteNode leaves it: nodes after it go, an action whose later pipeline stages would be
    empty goes, conditions of if/with/range are not searched."""
    cut = False

    def is_response(node: Any) -> bool:
        return isinstance(node, gonodes.FieldNode) and "Response" in node.fields

    def term(node: Any) -> Any:
        nonlocal cut
        if is_response(node):
            cut = True
            return node
        if cut:
            return None
        if isinstance(node, gonodes.ParenthesizedNode) and not node.fields:
            inner = pipe(node.pipeline)
            return None if inner is None else replace(node, pipeline=inner)
        return node

    def pipe(p: gonodes.PipeNode) -> gonodes.PipeNode | None:
        commands = []
        for command in p.commands:
            args = [a for a in map(term, command.arguments) if a is not None]
            if not args:
                return None
            commands.append(replace(command, arguments=tuple(args)))
        return replace(p, commands=tuple(commands))

    def node_list(lst: gonodes.ListNode) -> gonodes.ListNode:
        return gonodes.ListNode(tuple(n for n in map(node, lst.nodes) if n is not None))

    def node(n: Any) -> Any:
        if cut:
            return None
        if isinstance(n, (gonodes.IfNode, gonodes.WithNode, gonodes.RangeNode)):
            body = node_list(n.body)
            else_body = None if n.else_body is None or cut else node_list(n.else_body)
            return replace(n, body=body, else_body=else_body)
        if isinstance(n, gonodes.ActionNode):
            p = pipe(n.pipeline)
            return None if p is None else replace(n, pipeline=p)
        return n

    return node_list(root)


def _serialize(parsed: gonodes.ParsedTemplate, root: gonodes.ListNode, data: bytes) -> str:
    """Go template text for `root` (and the parsed definitions), printing actions wrapped as in
    `_wrap_printing`; terms are copied from the source `data`."""

    def term(t: Any) -> str:
        if isinstance(t, gonodes.ParenthesizedNode):
            return "(" + pipe(t.pipeline) + ")" + "".join("." + f for f in t.fields)
        return data[t.start:t.end].decode()

    def pipe(p: gonodes.PipeNode) -> str:
        text = " | ".join(" ".join(map(term, c.arguments)) for c in p.commands)
        if p.declarations:
            names = ", ".join(term(v) for v in p.declarations)
            text = f"{names} {'=' if p.is_assignment else ':='} {text}"
        return text

    def node(n: Any) -> str:
        if isinstance(n, gonodes.TextNode):
            # A `{` right before an action would make `{{{`: print that one from an action.
            return n.text[:-1] + '{{"{"}}' if n.text.endswith("{") else n.text
        if isinstance(n, gonodes.ActionNode):
            p = pipe(n.pipeline)
            return "{{" + (p if n.pipeline.declarations else f"{_PRINT} ({p})") + "}}"
        if isinstance(n, (gonodes.IfNode, gonodes.WithNode, gonodes.RangeNode)):
            keyword = {gonodes.IfNode: "if", gonodes.WithNode: "with",
                       gonodes.RangeNode: "range"}[type(n)]
            text = "{{" + keyword + " " + pipe(n.pipeline) + "}}" + node_list(n.body)
            if n.else_body is not None:
                text += "{{else}}" + node_list(n.else_body)
            return text + "{{end}}"
        if isinstance(n, gonodes.BreakNode):
            return "{{break}}"
        if isinstance(n, gonodes.ContinueNode):
            return "{{continue}}"
        if isinstance(n, (gonodes.TemplateCallNode, gonodes.BlockNode)):
            call = "{{template " + _json_string(n.name)
            return call + (" " + pipe(n.pipeline) if n.pipeline is not None else "") + "}}"
        raise TemplateError(f"template error: unexpected node {type(n).__name__}")

    def node_list(lst: gonodes.ListNode) -> str:
        return "".join(map(node, lst.nodes))

    definitions = "".join("{{define " + _json_string(d.name) + "}}" + node_list(d.body) + "{{end}}"
                          for d in parsed.definitions)
    return node_list(root) + definitions


# ---- rendering -----------------------------------------------------------------------------


def collate(messages: Sequence[ChatMessage]) -> tuple[str, list[ChatMessage]]:
    """System text (all system messages joined) and the messages with same-role runs merged
    (tool results stay apart); a merged message keeps the first one's other fields."""
    system: list[str] = []
    merged: list[ChatMessage] = []
    for msg in messages:
        if msg["role"] == "system":
            system.append(msg["content"])
        if merged and merged[-1]["role"] == msg["role"] and msg["role"] != "tool":
            merged[-1] = {**merged[-1], "content": merged[-1]["content"] + "\n\n" + msg["content"]}
        else:
            merged.append(msg.copy())
    return "\n\n".join(system), merged


def render_go(source: str, messages: Sequence[ChatMessage], *,
              tools: Sequence[Mapping[str, Any]] | None = None, think: bool | str | None = None,
              prompt: str = "", suffix: str = "") -> str:
    """The prompt an Ollama Go template makes of `messages` (dicts with `role` and `content`,
    and optionally `thinking`, `tool_calls`, `tool_name`, `tool_call_id`, `images`).

    `tools` are the request's tool definitions (Ollama's JSON shape), `think` the request's
    think value (None when not given, a bool, or "high"/"medium"/"low"/"max"). With both
    `prompt` and `suffix` set the template gets only those (fill-in-the-middle), as Ollama's
    /api/generate does for a request with a suffix."""
    compiled = _compile(source)
    extra = _think_values(think)
    try:
        if prompt and suffix:
            return compiled.template.render({"Prompt": prompt, "Suffix": suffix, "Response": "",
                                             **extra})
        system, merged = collate(messages)
        if "messages" in compiled.uses:
            return compiled.template.render({
                "System": system, "Messages": [_template_message(m) for m in merged],
                "Tools": template_tools(tools), "Response": "", **extra,
            })
        return _render_legacy(compiled, merged, extra)
    except gotpl.TemplateError as exc:
        raise TemplateError(f"template error: {exc}") from None


def _render_legacy(compiled: _Compiled, messages: list[ChatMessage], extra: dict[str, Any]) -> str:
    """Templates written against .System/.Prompt/.Response: one rendering per turn; the last
    one only up to `.Response` (which holds a trailing assistant message, to be continued)."""
    out: list[str] = []
    turn = {"System": "", "Prompt": "", "Response": ""}

    def execute() -> None:
        out.append(compiled.template.render({**turn, **extra}))
        turn.update(System="", Prompt="", Response="")

    for msg in messages:
        role = msg["role"]
        if role == "system":
            if turn["Prompt"] or turn["Response"]:
                execute()
            turn["System"] = msg["content"]
        elif role == "user":
            if turn["Response"]:
                execute()
            turn["Prompt"] = msg["content"]
        elif role == "assistant":
            turn["Response"] = msg["content"]
    assert compiled.cut is not None
    out.append(compiled.cut.render({**turn, **extra}))
    return "".join(out)


@lru_cache(maxsize=16)
def _jinja_template(source: str) -> Any:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    return env.from_string(source)


def _raise(message: str) -> None:
    raise TemplateError(message)


def render_jinja(source: str, messages: Sequence[ChatMessage], bos: str, eos: str, *,
                 tools: Sequence[Mapping[str, Any]] | None = None) -> str:
    extra = {} if tools is None else {"tools": list(tools)}
    try:
        text = _jinja_template(source).render(
            messages=list(messages), add_generation_prompt=True, bos_token=bos, eos_token=eos,
            **extra)
    except TemplateError:
        raise
    except Exception as exc:  # noqa: BLE001 - any template failure is the template's fault
        raise TemplateError(f"chat template error: {exc}") from None
    # The tokenizer adds BOS itself; a template that writes it too would double it.
    return text[len(bos):] if bos and text.startswith(bos) else text


def build_tokens(spec: PromptSpec, render: Callable[[Sequence[ChatMessage]], str],
                 tokenize: Tokenize, n_ctx: int) -> list[int]:
    """Prompt token ids; a chat history is cut to whole messages that fit in `n_ctx` (the
    engine truncates what is still too long, keeping room to generate)."""
    context = list(spec["context"])
    if spec["raw"] is not None:
        return context + tokenize(spec["raw"], not context)
    messages = spec["messages"]
    start = _first_message_that_fits(messages, render, tokenize, n_ctx - len(context))
    kept = [m for m in messages[:start] if m["role"] == "system"] + list(messages[start:])
    return context + tokenize(render(kept), not context)


def _first_message_that_fits(messages: Sequence[ChatMessage],
                             render: Callable[[Sequence[ChatMessage]], str],
                             tokenize: Tokenize, budget: int) -> int:
    """Index of the oldest message from which the history fits (system messages before it are
    kept). Fitting only gets easier as the start moves on, so the search gallops back from the
    newest message (1, 2, 4, ... messages) and then bisects: it renders only histories about
    the size of what fits, O(log n) times, never the whole of a 12,000-message history."""
    n = len(messages)

    def fits(start: int) -> bool:
        system = [m for m in messages[:start] if m["role"] == "system"]
        return len(tokenize(render(system + list(messages[start:])), True)) <= budget

    fitting, size = n - 1, 1  # the last message is always kept, fitting or not
    while size < n:
        size = min(size * 2, n)
        if not fits(n - size):
            break
        fitting = n - size
    else:
        return 0  # the whole history fits
    low, high = n - size + 1, fitting  # messages[low - 1:] is too long; messages[high:] fits
    while low < high:
        middle = (low + high) // 2
        if fits(middle):
            high = middle
        else:
            low = middle + 1
    return high

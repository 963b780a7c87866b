"""What Ollama's Go templates see, as Go values: messages, tools and tool calls with the field
names and shapes of Ollama's template types, JSON printed exactly as Go's encoding/json writes
it (keys sorted, `<>&` escaped, numbers as float64 prints them), and the template functions
Ollama registers beside Go's own (`json`, `currentDate`, `yesterdayDate`, `toTypeScriptType`).
prompt.py renders with these; nothing here parses or executes a template.
"""

from __future__ import annotations

import base64
import datetime
import json
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Callable, Iterable, Mapping, Sequence

import gotpl

try:  # the value gotpl gives for a missing field; only compared against
    from gotpl.runtime.values import INVALID as MISSING
except ImportError:  # pragma: no cover - a gotpl without it
    MISSING = object()


def go_json(value: Any) -> str:
    """`value` as Go's json.Marshal writes it: compact, map keys sorted, `<`, `>` and `&`
    escaped, numbers as float64 prints them, struct fields in declaration order."""
    if value is None or value is MISSING:
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
        return json_string(value)
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
        keys = list(value) if isinstance(value, OrderedMap) else sorted(value, key=str)
        return "{" + ",".join(f"{json_string(str(k))}:{go_json(value[k])}" for k in keys) + "}"
    return json_string(str(value))


_JSON_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b",
                 "\f": "\\f", "<": "\\u003c", ">": "\\u003e", "&": "\\u0026",
                 "\u2028": "\\u2028", "\u2029": "\\u2029"}
_JSON_SPECIAL = re.compile('["\\\\\x00-\x1f<>&\u2028\u2029\ud800-\udfff]')


def json_string(text: str) -> str:
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
    1e21, `e-7` not `e-07`) or fmt's %v, which is strconv's shortest %g (exponent below 1e-4
    and from 1e6: 1000000.0 prints as 1e+06)."""
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
    if (abs(number) < 1e-6 or abs(number) >= 1e21) if for_json else (point < -4 or point >= 6):
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


class OrderedMap(_GoMap):
    """api.ToolPropertiesMap: properties in the order the request gave them."""


@dataclass(frozen=True)
class GoField:
    name: str          # the Go field name templates use
    key: str | None    # the JSON key; None: the Go name (a struct without tags)
    omit: str = ""     # "empty" (omitempty on a value) or "nil" (omitempty on an interface)


class _GoStruct(_Formats):
    """A Go struct: exported fields as attributes, printed as fmt's %v prints it, marshalled as
    encoding/json does."""

    __slots__: tuple[str, ...] = ()
    _fields: tuple[GoField, ...] = ()
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
            parts.append(f"{json_string(field.key or field.name)}:{go_json(value)}")
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


def go_struct(name: str, fields: Iterable[GoField], pointer: bool = False) -> type[_GoStruct]:
    fields = tuple(fields)
    return type(name, (_GoStruct,), {"__slots__": tuple(f.name for f in fields),
                                     "_fields": fields, "_pointer": pointer})


def _plain(*names: str) -> list[GoField]:
    return [GoField(name, None) for name in names]


# template.go's templateMessage (pointers in .Messages), templateToolCall and its function.
_Message = go_struct("Message", _plain("Role", "Content", "Thinking", "Images", "ToolCalls",
                                     "ToolName", "ToolCallID"), pointer=True)
_ToolCall = go_struct("ToolCall", _plain("ID", "Function"))
_ToolCallFunction = go_struct("ToolCallFunction", _plain("Index", "Name", "Arguments"))
# template.go's templateTool (whose String() is its JSON), its function and parameters.
_Tool = go_struct("Tool", [GoField("Type", "type"), GoField("Items", "items", "nil"),
                         GoField("Function", "function")])
_ToolFunction = go_struct("ToolFunction", [GoField("Name", "name"), GoField("Description", "description"),
                                         GoField("Parameters", "parameters")])
_ToolParameters = go_struct("ToolParameters", [
    GoField("Type", "type"), GoField("Defs", "$defs", "nil"), GoField("Items", "items", "nil"),
    GoField("Required", "required", "empty"), GoField("Properties", "properties")])
# api.ToolProperty, as the values of .Function.Parameters.Properties.
_ToolProperty = go_struct("ToolProperty", [
    GoField("AnyOf", "anyOf", "empty"), GoField("Type", "type", "empty"),
    GoField("Items", "items", "nil"), GoField("Description", "description", "empty"),
    GoField("Enum", "enum", "empty"), GoField("Properties", "properties", "nil"),
    GoField("Required", "required", "empty")])


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
    if value is None or value is MISSING:
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
        Enum=(_GoList(_go_numbers(prop["enum"])) if isinstance(prop.get("enum"), list)
              else _NilList()),
        Properties=(OrderedMap((str(k), _tool_property(v)) for k, v in nested.items())
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
    return _StringerMap((str(k), _go_numbers(v)) for k, v in raw.items())


def _go_numbers(value: Any) -> Any:
    """JSON as Go decodes it into `any`: every number a float64 (so 1000000 prints as 1e+06)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, Mapping):
        return {k: _go_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_go_numbers(v) for v in value]
    return value


def template_message(msg: Mapping[str, Any]) -> Any:
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


def think_values(think: bool | str | None) -> dict[str, Any]:
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


PRINT = "_corralPrint"
FUNCTIONS: Mapping[str, Callable[..., Any]] = {
    "json": _json, "currentDate": _current_date, "yesterdayDate": _yesterday_date,
    "toTypeScriptType": _typescript_type, PRINT: _print_value,
}

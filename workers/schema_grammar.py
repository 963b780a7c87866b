"""JSON schema → GBNF grammar, exactly as llama.cpp converts it.

A request's `format` is "json" or a JSON schema; llama.cpp (and so llama-server and Ollama) turns
a schema into a GBNF grammar that the sampler enforces. `schema_grammar` gives, rule for rule, the
grammar of `json_schema_to_grammar` in the llama.cpp that llama-cpp-python 0.3.36 vendors
(common/json-schema.cpp reads the schema, common/json-schema-to-grammar.cpp writes the grammar),
so an answer is shaped as it would be there.

It replaces llama-cpp-python's bundled Python port, `llama_cpp.llama_grammar.SchemaConverter`,
which must not be used: it is older than llama.cpp's converter, its `char` rule admits raw control
characters (which JSON strings cannot hold), its integers have unbounded digits and its whitespace
is unbounded, and it writes a counted repetition by nesting, so `maxLength: 20000` nests 20000 deep
and overflows the stack of llama.cpp's recursive grammar parser.

A schema comes from a client, so conversion is bounded (the limits below): repetition is always
written as `{m,n}`, `*`, `+` or `?`, never expanded, and every count is checked before anything is
built, so time and memory do not depend on the counts. Every refusal is a SchemaError.

On purpose, schemas for which llama.cpp writes a grammar that its own parser refuses or loops on
are refused: a minimum count above MAX_REPETITIONS; `{5,3}`, which hangs the parser, whether from
minLength above maxLength or from a one-sided integer bound of 16 or more digits; a $ref that
refers only to itself. So are bounds that admit nothing. A `]` or `\\` in a property name that
additionalProperties excludes is escaped, where llama.cpp's grammar would not parse. By nature, a
const float that needs 16 or 17 digits may differ in its last digit (nlohmann's Grisu2 against
Python's shortest repr: the same double), and in a pattern a non-ASCII character before a
quantifier is repeated whole (llama.cpp repeats its last UTF-8 byte).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# llama.cpp's MAX_REPETITION_THRESHOLD: its grammar parser refuses `{m,n}` with m above this. A
# maximum above it is written as given, as llama.cpp does; the parser then takes it as unbounded.
MAX_REPETITIONS = 2000
MAX_SCHEMA_DEPTH = 64  # subschemas (and $ref hops) nested in each other: recursion stays shallow
MAX_SCHEMA_NODES = 10_000  # subschemas read, and properties gathered by allOf
MAX_CONST_VALUES = 10_000  # JSON values in all const and enum keywords, nested ones included
MAX_PATTERN_CHARS = 20_000  # all patterns translated, together: ~10 ms per 1000 characters
# llama.cpp's MAX_PATTERN_DEPTH: a pattern with groups nested deeper is taken as any string.
PATTERN_DEPTH = 100
# An object that allows other properties excludes its own names with one nested group per
# character; llama.cpp's grammar parser recurses once per group.
MAX_EXCLUDED_NAME_CHARS = 256
# Grammar text written, a rule written again counted again (and const and enum text apart): caps
# time and memory, as names grow with nesting. An object of 8000 properties takes 1.3 MiB.
MAX_GRAMMAR_CHARS = 2 << 20
# What llama.cpp's grammar parser writes out, all together: for `{m,n}` n rules or copies (m when
# n is above MAX_REPETITIONS), and a rule per pattern group. Each costs it about 200 bytes, so a
# grammar costs at most ~40 MB there (`{0,2000}` 2000 times would take 760 MB and 4.5 s).
MAX_PARSER_EXPANSION = 200_000

_INT32_MAX = 2**31 - 1  # llama.cpp reads counts as C ints; INT_MAX there means "no maximum"
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1  # integer bounds are int64; the extremes: unbounded
_INTEGER_DIGITS = 16  # integers in llama.cpp's grammar have at most 16 digits
_SHOWN_CHARS = 80  # how much of a client's text an error message quotes

_SPACE_RULE = r'| " " | "\n"{1,2} [ \t]{0,20}'

# name → (rule, the rules it refers to): llama.cpp's PRIMITIVE_RULES and STRING_FORMAT_RULES.
_BUILTIN_RULES: dict[str, tuple[str, tuple[str, ...]]] = {
    "boolean": ('("true" | "false")', ()),
    "decimal-part": ("[0-9]{1,16}", ()),
    "integral-part": ("[0] | [1-9] [0-9]{0,15}", ()),
    "number": ('("-"? integral-part) ("." decimal-part)? ([eE] [-+]? integral-part)?',
               ("integral-part", "decimal-part")),
    "integer": ('("-"? integral-part)', ("integral-part",)),
    "value": ("object | array | string | number | boolean | null",
              ("object", "array", "string", "number", "boolean", "null")),
    "object": ('"{" space ( string ":" space value ("," space string ":" space value)* )? '
               'space "}"', ("string", "value")),
    "array": ('"[" space ( value ("," space value)* )? space "]"', ("value",)),
    "uuid": (r'"\"" [0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} '
             r'"-" [0-9a-fA-F]{12} "\""', ()),
    "char": (r'[^"\\\x7F\x00-\x1F] | [\\] (["\\bfnrt] | "u" [0-9a-fA-F]{4})', ()),
    "string": (r'"\"" char* "\""', ("char",)),
    "null": ('"null"', ()),
    "date": ('[0-9]{4} "-" ( "0" [1-9] | "1" [0-2] ) "-" ( "0" [1-9] | [1-2] [0-9] | "3" [0-1] )',
             ()),
    "time": ('([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{3} )? '
             '( "Z" | ( "+" | "-" ) ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] )', ()),
    "date-time": ('date "T" time', ("date", "time")),
    "date-string": (r'"\"" date "\""', ("date",)),
    "time-string": (r'"\"" time "\""', ("time",)),
    "date-time-string": (r'"\"" date-time "\""', ("date-time",)),
}
_RESERVED_NAMES = frozenset({"root", *_BUILTIN_RULES})

# llama.cpp's grammars/json.gbnf (as its copy in llama_cpp.llama_grammar): `format: "json"`.
# Its root is an object, as Ollama's copy of it.
JSON_GRAMMAR = r'''root   ::= object
value  ::= object | array | string | number | ("true" | "false" | "null") ws

object ::=
  "{" ws (
            string ":" ws value
    ("," ws string ":" ws value)*
  )? "}" ws

array  ::=
  "[" ws (
            value
    ("," ws value)*
  )? "]" ws

string ::=
  "\"" (
    [^"\\\x7F\x00-\x1F] |
    "\\" (["\\bfnrt] | "u" [0-9a-fA-F]{4}) # escapes
  )* "\"" ws

number ::= ("-"? ([0-9] | [1-9] [0-9]{0,15})) ("." [0-9]+)? ([eE] [-+]? [0-9] [1-9]{0,15})? ws

# Optional space: by convention, applied in this grammar after literal chars when allowed
ws ::= | " " | "\n" [ \t]{0,20}
'''

_ITEM_SEPARATOR = ' "," space '
_INVALID_RULE_CHARS = re.compile(r"[^a-zA-Z0-9-]+")
_LITERAL_ESCAPES = str.maketrans({"\r": r"\r", "\n": r"\n", '"': r"\"", "\\": "\\\\"})
_CLASS_ESCAPES = str.maketrans({"\\": "\\\\", "]": r"\]"})
_C_INTEGER = re.compile(r"[ \t\n\v\f\r]*([+-]?)([0-9]+)")  # what strtol-like C calls parse
_DIGIT_REPETITIONS = re.compile(r"\{([0-9]+)(?:,([0-9]+))?\}")
_UUID_VERSION = re.compile(r"uuid[1-5]")


class SchemaError(ValueError):
    """The schema is refused: not valid, outside what llama.cpp converts, or over a limit."""


def schema_grammar(schema: dict[str, Any] | bool) -> str:
    """The GBNF grammar (with a `root` rule) that llama.cpp makes of a JSON schema; SchemaError
    where it is refused (a boolean schema too, as llama.cpp takes only objects)."""
    converter = _Converter()
    converter.visit(_Reader(schema).read(), "")
    return converter.grammar()


# The schema as llama.cpp reads it (common_chat_schema): the converter works on these.

class _Node:
    pass


@dataclass(eq=False)
class _Any(_Node):
    pass


@dataclass(eq=False)
class _Ref(_Node):
    ref: str
    target: _Node | None = None  # set once the whole schema is read: a cycle needs it later


@dataclass(eq=False)
class _AnyOf(_Node):
    children: list[_Node]


@dataclass(eq=False)
class _AllOf(_Node):
    children: list[_Node]


@dataclass(eq=False)
class _Const(_Node):
    literal: str  # the value as JSON text


@dataclass(eq=False)
class _Enum(_Node):
    literals: list[str]


@dataclass(eq=False)
class _Primitive(_Node):
    type: str  # "number", "boolean" or "null"


@dataclass(eq=False)
class _Integer(_Node):
    expression: str | None  # the digits' grammar; None: no bounds
    expansion: int = 0  # of its digit repetitions in llama.cpp's parser


@dataclass(eq=False)
class _String(_Node):
    pattern: str
    format: str | None  # uuid, date, time or date-time
    min_length: int
    max_length: int | None
    path: str


@dataclass(eq=False)
class _Array(_Node):
    items: _Node
    min_items: int
    max_items: int | None


@dataclass(eq=False)
class _Tuple(_Node):
    items: list[_Node]


@dataclass(eq=False)
class _Property:
    name: str
    schema: _Node
    required: bool


@dataclass(eq=False)
class _Object(_Node):
    properties: list[_Property]
    additional: _Node | None  # None: no other properties


class _Reader:
    """Reads and checks a schema as llama.cpp's common_chat_schema_from_json, within the limits."""

    def __init__(self, root: Any) -> None:
        self._root = root
        self._targets: dict[str, _Node | None] = {}  # $ref → its schema (None while being read)
        self._refs: list[_Ref] = []
        self._nodes = 0
        self._values = 0
        self._text = 0  # characters of const and enum strings

    def read(self) -> _Node:
        node = self._node(self._root, "#", 0)
        for ref in self._refs:
            ref.target = self._targets[ref.ref]
        self._refuse_ref_loops()
        return node

    def _node(self, schema: Any, path: str, depth: int) -> _Node:
        if not isinstance(schema, dict):
            raise _error(path, "a schema must be an object")
        self._enter(path, depth)
        if "$ref" in schema:
            return self._ref(schema["$ref"], path, depth)
        for key in ("oneOf", "anyOf"):
            if key in schema:
                return _AnyOf(self._schemas(schema[key], f"{path}/{key}", depth))
        return self._shaped(schema, schema.get("type"), path, depth)

    def _enter(self, path: str, depth: int) -> None:
        if depth > MAX_SCHEMA_DEPTH:
            raise _error(path, f"schemas are nested more than {MAX_SCHEMA_DEPTH} deep")
        self._nodes += 1
        if self._nodes > MAX_SCHEMA_NODES:
            raise _error(path, f"the schema has more than {MAX_SCHEMA_NODES} subschemas")

    def _shaped(self, schema: dict[str, Any], kind: Any, path: str, depth: int) -> _Node:
        """The schema by its `type` (`kind`), its const or enum, or its keywords."""
        if isinstance(kind, list):  # one alternative per type, each the schema with that type
            if not kind:
                raise _error(path, "type must not be empty")
            alternatives: list[_Node] = []
            for i, each in enumerate(kind):
                self._enter(f"{path}/type/{i}", depth + 1)
                alternatives.append(self._shaped(schema, each, f"{path}/type/{i}", depth + 1))
            return _AnyOf(alternatives)
        if "const" in schema:
            return _Const(self._literal(schema["const"], f"{path}/const", depth + 1))
        if "enum" in schema:
            values = schema["enum"]
            if not isinstance(values, list) or not values:
                raise _error(path, "enum must be a non-empty array")
            return _Enum([self._literal(v, f"{path}/enum", depth + 1) for v in values])
        if kind is not None and not isinstance(kind, str):
            raise _error(path, "type must be a string or an array of strings")
        extra = schema.get("additionalProperties", True)
        has_properties = "properties" in schema or extra is not True
        if not kind:  # the structural keywords decide, in llama.cpp's order
            if has_properties:
                return self._object(schema, path, depth)
            if "allOf" in schema:
                return _AllOf(self._schemas(schema["allOf"], f"{path}/allOf", depth))
            if "items" in schema or "prefixItems" in schema:
                return self._array(schema, path, depth)
            if ("pattern" in schema or "minLength" in schema or "maxLength" in schema
                    or _string_format(schema, path)):
                return self._string(schema, path)
            return _Any()
        if kind == "object":
            if not has_properties and "allOf" in schema:
                return _AllOf(self._schemas(schema["allOf"], f"{path}/allOf", depth))
            return self._object(schema, path, depth)
        if kind == "string":
            if "allOf" in schema:
                return _AllOf(self._schemas(schema["allOf"], f"{path}/allOf", depth))
            return self._string(schema, path)
        if kind == "array":
            return self._array(schema, path, depth)
        if kind == "integer":
            return _integer(schema, path)
        if kind in ("number", "boolean", "null"):
            return _Primitive(kind)
        raise _error(path, f"unrecognized type {_shown(kind)}")

    def _ref(self, ref: Any, path: str, depth: int) -> _Ref:
        if not isinstance(ref, str):
            raise _error(path, "$ref must be a string")
        if not ref.startswith("#/"):  # never fetched: only this document is read
            raise _error(path, f"unsupported $ref {_shown(ref)}, only references into the same "
                               "document (#/...) are supported")
        if ref not in self._targets:
            self._targets[ref] = None  # a cycle back to this $ref stops here
            self._targets[ref] = self._node(self._resolve(ref, path), ref, depth + 1)
        node = _Ref(ref)
        self._refs.append(node)
        return node

    def _resolve(self, ref: str, path: str) -> Any:
        """The part of the document that `ref` names: keys and array indexes, unescaped."""
        target = self._root
        for key in ref[2:].split("/"):
            if isinstance(target, dict) and key in target:
                target = target[key]
            elif isinstance(target, list):
                index = _array_index(key)
                if index is None or index >= len(target):
                    raise _error(path, f"cannot resolve $ref {_shown(ref)}, {_shown(key)} is out "
                                       "of range")
                target = target[index]
            else:
                raise _error(path, f"cannot resolve $ref {_shown(ref)}, {_shown(key)} not found")
        return target

    def _refuse_ref_loops(self) -> None:
        """A $ref whose chain of $refs comes back to itself names no schema at all: llama.cpp's
        grammar for it is left-recursive (refused by its parser), and allOf loops forever."""
        settled: set[str] = set()
        for start in self._targets:
            chain: set[str] = set()
            ref = start
            while ref not in settled:
                if ref in chain:
                    raise _error(ref, "the $ref refers only to itself, through $refs")
                chain.add(ref)
                target = self._targets[ref]
                if not isinstance(target, _Ref):
                    break
                ref = target.ref
            settled |= chain

    def _schemas(self, value: Any, path: str, depth: int) -> list[_Node]:
        if not isinstance(value, list):
            raise _error(path, "must be an array of schemas")
        if not value:
            raise _error(path, "must not be empty")
        return [self._node(each, f"{path}/{i}", depth + 1) for i, each in enumerate(value)]

    def _literal(self, value: Any, path: str, depth: int) -> str:
        """A const or enum value as JSON text, as llama.cpp (nlohmann::json) writes it."""
        if depth > MAX_SCHEMA_DEPTH:
            raise _error(path, f"values are nested more than {MAX_SCHEMA_DEPTH} deep")
        self._values += 1
        if self._values > MAX_CONST_VALUES:
            raise _error(path, f"const and enum hold more than {MAX_CONST_VALUES} values")
        if value is None or isinstance(value, bool):
            return json.dumps(value)
        if isinstance(value, int):
            if _INT64_MIN <= value < 2**64:
                return str(value)
            try:
                return _float_text(float(value), path)  # as nlohmann reads a larger integer
            except OverflowError:
                raise _error(path, "a number is too large for a 64-bit float") from None
        if isinstance(value, float):
            return _float_text(value, path)
        if isinstance(value, str):
            return self._string_literal(value, path)
        if isinstance(value, list):
            return "[" + ",".join(self._literal(v, path, depth + 1) for v in value) + "]"
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            return "{" + ",".join(f"{self._string_literal(k, path)}:"
                                  f"{self._literal(v, path, depth + 1)}"
                                  for k, v in value.items()) + "}"
        raise _error(path, "not a JSON value")

    def _string_literal(self, text: str, path: str) -> str:
        self._text += len(text)  # the same value is read again for each type a schema lists
        if self._text > MAX_GRAMMAR_CHARS:
            raise _error(path, f"const and enum text is longer than {MAX_GRAMMAR_CHARS} characters")
        return _json_string(text)

    def _object(self, schema: dict[str, Any], path: str, depth: int) -> _Object:
        listed = schema.get("required")
        required = {n for n in listed if isinstance(n, str)} if isinstance(listed, list) else set()
        properties = []
        if "properties" in schema:
            props = schema["properties"]
            if not isinstance(props, dict):
                raise _error(path, "properties must be an object")
            for name, prop in props.items():
                if not isinstance(name, str):
                    raise _error(path, "property names must be strings")
                node = self._node(prop, f"{path}/properties/{name}", depth + 1)
                properties.append(_Property(name, node, name in required))
        additional: _Node | None = None
        if "additionalProperties" in schema:
            extra = schema["additionalProperties"]
            if isinstance(extra, dict):
                additional = self._node(extra, f"{path}/additionalProperties", depth + 1)
            elif extra is True:
                additional = _Any()
            elif extra is not False:
                raise _error(path, "additionalProperties must be a boolean or a schema")
        elif "properties" not in schema:  # {"type": "object"} alone: any object
            additional = _Any()
        if additional is not None:
            for prop in properties:
                if len(prop.name) > MAX_EXCLUDED_NAME_CHARS:
                    raise _error(path, f"a property name longer than {MAX_EXCLUDED_NAME_CHARS} "
                                       "characters where additionalProperties are allowed")
        return _Object(properties, additional)

    def _array(self, schema: dict[str, Any], path: str, depth: int) -> _Array | _Tuple:
        key = "items" if "items" in schema else "prefixItems"  # items wins, as in llama.cpp
        if key in schema:
            items = schema[key]
            if isinstance(items, list):  # a tuple; minItems and maxItems are not read
                return _Tuple([self._node(item, f"{path}/{key}/{i}", depth + 1)
                               for i, item in enumerate(items)])
            item = self._node(items, f"{path}/{key}", depth + 1)
        else:
            item = _Any()
        low = _count(schema, "minItems", path) or 0
        high = _count(schema, "maxItems", path)
        # The first item is written before the repetition of the others: {minItems - 1,}.
        _check_counts(path, "minItems", low, "maxItems", high, MAX_REPETITIONS + 1)
        return _Array(item, low, high)

    def _string(self, schema: dict[str, Any], path: str) -> _String:
        pattern = schema.get("pattern", "")
        if not isinstance(pattern, str):
            raise _error(path, "pattern must be a string")
        string_format = _string_format(schema, path)
        low = _count(schema, "minLength", path) or 0
        high = _count(schema, "maxLength", path)
        if not pattern and not string_format:  # else the lengths are not used
            _check_counts(path, "minLength", low, "maxLength", high, MAX_REPETITIONS)
        return _String(pattern, string_format, low, high, path)


def _integer(schema: dict[str, Any], path: str) -> _Integer:
    """Bounds as int64, exclusive ones folded in, a fractional one rounded inwards."""
    low: int | None = None
    high: int | None = None
    if "minimum" in schema:
        low = _bound(schema, "minimum", path, math.ceil, 0)
    elif "exclusiveMinimum" in schema:
        low = _bound(schema, "exclusiveMinimum", path, math.floor, +1)
    if "maximum" in schema:
        high = _bound(schema, "maximum", path, math.floor, 0)
    elif "exclusiveMaximum" in schema:
        high = _bound(schema, "exclusiveMaximum", path, math.ceil, -1)
    # The int64 extremes are llama.cpp's "unbounded".
    low = None if low == _INT64_MIN else low
    high = None if high == _INT64_MAX else high
    if low is None and high is None:
        return _Integer(None)
    if low is not None and high is not None and low > high:
        raise _error(path, f"no integer lies between the bounds ({low} to {high})")
    try:
        expression = _int_range(low, high)
    except _TooManyDigits:
        bound = "minimum" if high is None else "maximum"
        raise _error(path, f"{bound} {low if high is None else high} has too many digits for "
                           f"llama.cpp's integers, which have at most {_INTEGER_DIGITS}") from None
    # The expression holds no text of the client's, only [0-9]{m} and [0-9]{m,n}.
    expansion = sum(int(most or least) for least, most in _DIGIT_REPETITIONS.findall(expression))
    return _Integer(expression, expansion)


def _bound(schema: dict[str, Any], key: str, path: str, rounding: Callable[[float], int],
           step: int) -> int:
    value = schema[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _error(path, f"{key} must be a number")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _error(path, f"{key} must be a finite number")
        value = rounding(value)
    value += step
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise _error(path, f"{key} does not fit in a 64-bit integer")
    return value


def _count(schema: dict[str, Any], key: str, path: str) -> int | None:
    if key not in schema:
        return None
    value = schema[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise _error(path, f"{key} must be a non-negative integer")
    if value > _INT32_MAX:  # llama.cpp reads it as a C int
        raise _error(path, f"{key} {_shown(value)} is above the limit of {_INT32_MAX}")
    return value


def _check_counts(path: str, low_key: str, low: int, high_key: str, high: int | None,
                  limit: int) -> None:
    if low > limit:
        raise _error(path, f"{low_key} {low} is above the limit of {limit}")
    if high is not None and low > high:  # llama.cpp's parser loops forever on {m,n} with m > n
        raise _error(path, f"{low_key} {low} is above {high_key} {high}")


def _string_format(schema: dict[str, Any], path: str) -> str | None:
    """The formats llama.cpp has rules for; any other is a plain string."""
    if "format" not in schema:
        return None
    value = schema["format"]
    if not isinstance(value, str):
        raise _error(path, "format must be a string")
    if value in ("date", "time", "date-time"):
        return value
    return "uuid" if value == "uuid" or _UUID_VERSION.fullmatch(value) else None


def _array_index(key: str) -> int | None:
    """An array index in a $ref as C's stoull reads it (None: not a number or out of range)."""
    match = _C_INTEGER.match(key)
    if not match or len(match[2].lstrip("0")) > 20:
        return None
    value = int(match[2])
    return None if match[1] == "-" and value else value  # stoull wraps -n around to 2**64 - n


def _float_text(value: float, path: str) -> str:
    """A float as nlohmann::json writes it: the shortest digits, as Python's repr, but with an
    exponent from 16 integral digits on (Python keeps 16 in fixed notation)."""
    if not math.isfinite(value):
        raise _error(path, "numbers must be finite")
    text = repr(value)
    if not 1e15 <= abs(value) < 1e16:
        return text
    sign, digits = ("-", text[1:]) if text.startswith("-") else ("", text)
    digits = digits.removesuffix(".0").replace(".", "").rstrip("0")
    return f"{sign}{digits[0]}{'.' + digits[1:] if len(digits) > 1 else ''}e+15"


def _json_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # escapes as nlohmann does; non-ASCII as is


def _quote(text: str) -> str:
    """A GBNF literal matching `text`."""
    return f'"{text.translate(_LITERAL_ESCAPES)}"'


def _error(path: str, message: str) -> SchemaError:
    return SchemaError(f"{_shown(path, quoted=False)}: {message}")


def _shown(value: Any, quoted: bool = True) -> str:
    """A client's value in a message, cut short (a huge integer is never turned into text)."""
    if isinstance(value, int) and value.bit_length() > 200:
        return "a number of more than 60 digits"
    text = repr(value) if quoted else str(value)
    return text if len(text) <= _SHOWN_CHARS else text[:_SHOWN_CHARS] + "…"


# Repetition and integer ranges, written as llama.cpp writes them.

def _repetition(item: str, low: int, high: int | None, separator: str = "") -> str:
    """`item` from low to high times (None or INT_MAX: no maximum), as llama.cpp's
    build_repetition: with a separator, the first item stands before the repeated others."""
    bounded = high is not None and high != _INT32_MAX
    if high == 0:
        return ""
    if low == 0 and high == 1:
        return item + "?"
    if not separator:
        if not bounded and low == 1:
            return item + "+"
        if not bounded and low == 0:
            return item + "*"
        return f"{item}{{{low},{high if bounded else ''}}}"
    rest = _repetition(f"({separator} {item})", max(low - 1, 0), high - 1 if bounded else None)
    return f"{item} {rest}" if low else f"({item} {rest})?"


def _expansion(low: int, high: int | None) -> int:
    """How many copies of the repeated item llama.cpp's parser writes out for {low,high}."""
    if high is not None and high != _INT32_MAX and high <= MAX_REPETITIONS:
        return high
    return low


class _TooManyDigits(Exception):
    """llama.cpp would write [0-9]{m,n} with m > n, which its grammar parser loops on."""


def _int_range(low: int | None, high: int | None, digits_left: int = _INTEGER_DIGITS,
               top: bool = True) -> str:
    """The decimal integers from low to high (None: unbounded there), as llama.cpp's
    build_min_max_int writes them: at most 16 digits where a side is unbounded."""
    if low is not None and high is not None:
        return _bounded_range(low, high, digits_left)
    fewer = max(digits_left - 1, 1)
    if low is not None:
        return _range_from(low, digits_left, fewer, top)
    assert high is not None
    if high < 0:
        return f'"-" ({_int_range(-high, None, digits_left, False)})'
    negatives = f'"-" [1-9] {_digits(0, fewer)} | ' if top else ""
    return negatives + _int_range(0, high, digits_left, True)


def _range_from(low: int, digits_left: int, fewer: int, top: bool) -> str:
    if low < 0:
        return (f'"-" ({_int_range(None, -low, digits_left, False)}) | [0] | [1-9] '
                f"{_digits(0, digits_left - 1)}")
    if low == 0:
        return f"[0] | [1-9] {_digits(0, fewer)}" if top else _digits(1, digits_left)
    text = str(low)
    first = text[0]
    lowest = "1" if top else "0"
    if low <= 9:
        smaller = f"{_digit_range(lowest, _prev(first))} {_digits(1, fewer)} | " \
            if first > lowest else ""
        return f"{smaller}{_digit_range(first, '9')} {_digits(0, fewer)}"
    shorter = f"{_digit_range(lowest, _prev(first))} {_digits(len(text), fewer)} | " \
        if first > "1" else ""
    rest = f"[{first}] ({_int_range(int(text[1:]), None, fewer, False)})"
    larger = f" | {_digit_range(_next(first), '9')} {_digits(len(text) - 1, fewer)}" \
        if first < "9" else ""
    return shorter + rest + larger


def _bounded_range(low: int, high: int, digits_left: int) -> str:
    if high < 0:
        return f'"-" ({_int_range(-high, -low, digits_left, True)})'
    negatives = ""
    if low < 0:
        negatives = f'"-" ({_int_range(0, -low, digits_left, True)}) | '
        low = 0
    start, end = str(low), str(high)
    parts = []
    for length in range(len(start), len(end)):  # one part per number of digits
        parts.append(_same_length_range(start, "9" * length))
        start = "1" + "0" * length
    parts.append(_same_length_range(start, end))
    return negatives + " | ".join(parts)


def _same_length_range(low: str, high: str) -> str:
    """Digit strings from low to high, both of one length (llama.cpp's uniform_range)."""
    common = 0
    while common < len(low) and low[common] == high[common]:
        common += 1
    out = [f'"{low[:common]}"'] if common else []
    if common == len(low):
        return "".join(out)
    if common:
        out.append(" ")
    first, last = low[common], high[common]
    rest = len(low) - common - 1
    if not rest:
        return "".join([*out, f"[{first}-{last}]"])
    low_rest, high_rest = low[common + 1:], high[common + 1:]
    zeros, nines = "0" * rest, "9" * rest
    out.append("(")
    last_done = False
    if low_rest == zeros:
        out.append(f"{_digit_range(first, _prev(last))} {_digits(rest, rest)}")
    else:
        out.append(f"[{first}] ({_same_length_range(low_rest, nines)})")
        if first < _prev(last):
            last_done = high_rest == nines
            middle = _digit_range(_next(first), last if last_done else _prev(last))
            out.append(f" | {middle} {_digits(rest, rest)}")
    if not last_done:
        out.append(f" | {_digit_range(last, last)} {_same_length_range(zeros, high_rest)}")
    out.append(")")
    return "".join(out)


def _digits(low: int, high: int) -> str:
    if low > high:
        raise _TooManyDigits
    if low == high == 1:
        return "[0-9]"
    return f"[0-9]{{{low}{'' if low == high else f',{high}'}}}"


def _digit_range(first: str, last: str) -> str:
    return f"[{first}]" if first == last else f"[{first}-{last}]"


def _prev(digit: str) -> str:
    return chr(ord(digit) - 1)


def _next(digit: str) -> str:
    return chr(ord(digit) + 1)


# Patterns, translated as llama.cpp's _pattern_to_rule does.

class _Unsupported(Exception):
    """A regexp with no grammar equivalent: llama.cpp then accepts any string."""


class _Invalid(Exception):
    """Not a regexp: llama.cpp refuses the schema."""


_NON_LITERAL = frozenset("|.()[]{}*+?^$")
_REGEXP_ONLY_ESCAPES = frozenset("^$.[]()|{}*+?")  # `\x` of these is the plain character
_GBNF_ESCAPES = frozenset('trn\\"[]-')  # kept as written: llama.cpp's grammar parser reads them
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


class _Pattern:
    """One `pattern`: `translate` names its rule, with the sub-rules it needs added by
    `add_rule`; `expansion` then holds what its repetitions and groups cost llama.cpp's
    parser."""

    def __init__(self, text: str, name: str, add_rule: Callable[[str, str], str]) -> None:
        self._text = text
        self._name = name
        self._add_rule = add_rule
        self._body = ""
        self._pos = 0
        self._depth = 0
        self._sub_rules: dict[str, str] = {}  # repeated group or class → its rule
        self._count_error = ""  # refused only once the whole pattern proves supported
        self.expansion = 0

    def translate(self) -> str:
        text = self._text
        if len(text) < 2 or text[0] != "^" or text[-1] != "$":
            raise _Unsupported("not anchored with '^' and '$'")
        self._body = text[1:-1]
        rule = self._sequence()
        if self._depth:
            raise _Invalid("unbalanced parentheses")
        if self._count_error:
            raise SchemaError(self._count_error)
        return self._add_rule(self._name, rf'"\"" ({rule}) "\""')

    def _sequence(self) -> str:
        """Up to the `)` that closes the current group, or the end."""
        body = self._body
        seq: list[tuple[str, bool]] = []  # (text, is a literal)
        while self._pos < len(body):
            c = body[self._pos]
            if c == ".":
                seq.append((self._add_rule("dot", r"[^\x0A\x0D]"), False))
                self._pos += 1
            elif c == "(":
                self._pos += 1
                if body.startswith("?", self._pos):
                    if not body.startswith("?:", self._pos):  # lookaround, named group, flags
                        raise _Unsupported("unsupported group syntax")
                    self._pos += 2
                self._depth += 1
                if self._depth > PATTERN_DEPTH:
                    raise _Unsupported("pattern nesting too deep")
                self.expansion += 1
                seq.append((f"({self._sequence()})", False))
            elif c == ")":
                self._pos += 1
                if not self._depth:
                    raise _Invalid("unbalanced parentheses")
                self._depth -= 1
                return _joined(seq)
            elif c in "^$":
                raise _Unsupported("anchor inside the pattern")
            elif c == "[":
                seq.append((self._char_class(), False))
            elif c == "|":
                seq.append(("|", False))
                self._pos += 1
            elif c in "*+?":
                if not seq:
                    raise _Invalid("nothing to repeat")
                seq[-1] = (_as_rule(seq[-1]) + c, False)
                self._pos += 1
            elif c == "{":
                self._counted(seq)
            else:
                seq.append((self._literal(c), True))
        return _joined(seq)

    def _char_class(self) -> str:
        body = self._body
        out = ["["]
        self._pos += 1
        while self._pos < len(body) and body[self._pos] != "]":
            if body[self._pos] == "\\":
                length = _gbnf_escape_length(body, self._pos)
                if not length:
                    raise _Unsupported("unsupported escape in character class: "
                                       + body[self._pos:self._pos + 2])
                out.append(body[self._pos:self._pos + length])
                self._pos += length
            else:
                out.append(body[self._pos])
                self._pos += 1
        if self._pos >= len(body):
            raise _Invalid("unterminated character class")
        self._pos += 1
        return "".join(out) + "]"

    def _counted(self, seq: list[tuple[str, bool]]) -> None:
        """`{m}`, `{m,}`, `{,n}` or `{m,n}` on the last item."""
        body = self._body
        end = body.find("}", self._pos)
        if end < 0:
            raise _Unsupported("unterminated curly brackets")
        numbers = body[self._pos + 1:end].split(",")
        self._pos = end + 1
        high: int | None
        if len(numbers) == 1:
            low = high = _c_int(numbers[0])
        elif len(numbers) == 2:
            low = _c_int(numbers[0]) if numbers[0] else 0
            high = _c_int(numbers[1]) if numbers[1] else None
        else:
            raise _Unsupported("wrong number of values in curly brackets")
        if not seq:
            raise _Invalid("nothing to repeat")
        self._check_counts(low, high)
        text, literal = seq[-1]
        if literal:
            item = f'"{text}"'
        else:  # a group or class is repeated through a rule of its own
            item = self._sub_rules.get(text, "")
            if not item:
                item = self._add_rule(f"{self._name}-{len(self._sub_rules) + 1}", text)
                self._sub_rules[text] = item
        self.expansion += _expansion(low, high) * (len(text) if literal else 1)
        seq[-1] = (_repetition(item, low, high), False)

    def _check_counts(self, low: int, high: int | None) -> None:
        if self._count_error:
            return
        shown = f"pattern {_shown(self._text)}"
        if low < 0 or (high is not None and high < 0):
            self._count_error = f"{shown} has a negative repetition count"
        elif low > MAX_REPETITIONS:
            self._count_error = (f"{shown} repeats an item at least {low} times, above the limit "
                                 f"of {MAX_REPETITIONS}")
        elif high is not None and low > high:
            self._count_error = f"{shown} repeats an item at least {low} but at most {high} times"

    def _literal(self, first: str) -> str:
        """Characters up to the next operator; one that an operator follows stands alone."""
        body = self._body
        out: list[str] = []
        while self._pos < len(body):
            c = body[self._pos]
            if c == "\\":
                if self._pos == len(body) - 1:
                    raise _Invalid("trailing backslash")
                escaped = body[self._pos + 1]
                if escaped in _REGEXP_ONLY_ESCAPES:
                    out.append(escaped)
                    self._pos += 2
                    continue
                length = _gbnf_escape_length(body, self._pos)
                if not length:
                    raise _Unsupported("unsupported escape: " + body[self._pos:self._pos + 2])
                out.append(body[self._pos:self._pos + length])
                self._pos += length
            elif c == '"':
                out.append(r"\"")
                self._pos += 1
            elif c not in _NON_LITERAL and (self._pos == len(body) - 1 or not out
                                            or body[self._pos + 1] == "."
                                            or body[self._pos + 1] not in _NON_LITERAL):
                out.append(c)
                self._pos += 1
            else:
                break
        if not out:  # a stray `]` or `}`
            raise _Unsupported(f"unsupported character: {first}")
        return "".join(out)


def _joined(seq: list[tuple[str, bool]]) -> str:
    """The items of a sequence, consecutive literals merged into one."""
    parts: list[str] = []
    literal: list[str] = []
    for text, is_literal in seq:
        if is_literal:
            literal.append(text)
            continue
        if literal:
            parts.append(f'"{"".join(literal)}"')
            literal = []
        parts.append(text)
    if literal:
        parts.append(f'"{"".join(literal)}"')
    return " ".join(parts)


def _as_rule(item: tuple[str, bool]) -> str:
    text, literal = item
    return f'"{text}"' if literal else text


def _gbnf_escape_length(text: str, pos: int) -> int:
    """The length of the escape at `pos` that llama.cpp's grammar parser reads (0: none)."""
    if pos + 1 >= len(text) or text[pos] != "\\":
        return 0
    kind = text[pos + 1]
    hex_digits = {"x": 2, "u": 4, "U": 8}.get(kind)
    if hex_digits is None:
        return 2 if kind in _GBNF_ESCAPES else 0
    digits = text[pos + 2:pos + 2 + hex_digits]
    return 2 + hex_digits if len(digits) == hex_digits and set(digits) <= _HEX_DIGITS else 0


def _c_int(text: str) -> int:
    """A count in `{}` as C++'s std::stoi reads it: leading blanks, a sign, digits, then
    anything (ignored)."""
    match = _C_INTEGER.match(text)
    if not match or len(match[2].lstrip("0")) > 10:
        raise _Unsupported("invalid number in curly brackets")
    value = int(match[1] + match[2])
    if not -_INT32_MAX - 1 <= value <= _INT32_MAX:
        raise _Unsupported("invalid number in curly brackets")
    return value


class _Converter:
    """Writes the grammar of a read schema, as llama.cpp's common_chat_schema_converter."""

    def __init__(self) -> None:
        self._rules: dict[str, str] = {"space": _SPACE_RULE}
        self._written = 0  # characters of rules written, again when written again
        self._pattern_chars = 0
        # For _add_rule's numbered names: per escaped name, the first free number (numbers only
        # grow: no rule is ever removed) and the first number holding a given rule.
        self._free_number: dict[str, int] = {}
        self._numbered: dict[tuple[str, str], int] = {}
        self._resolving: set[str] = set()
        self._depth = 0
        self._gathered = 0
        self._expanded = 0

    def grammar(self) -> str:
        text = "".join(f"{name} ::= {rule}\n" for name, rule in sorted(self._rules.items()))
        if "\0" in text:  # llama.cpp reads the grammar as a C string
            raise SchemaError("the schema puts a NUL character into the grammar")
        try:
            text.encode()
        except UnicodeEncodeError:
            raise SchemaError("the schema has text that is not valid Unicode") from None
        return text

    def visit(self, node: _Node, name: str) -> str:
        """The rule (a name, or for a primitive its own) for `node`, named after `name`."""
        self._depth += 1
        try:
            if self._depth > MAX_SCHEMA_DEPTH + 1:  # $ref targets first reached deeper in
                raise SchemaError(f"schemas are nested more than {MAX_SCHEMA_DEPTH} deep")
            return self._visit(node, name)
        finally:
            self._depth -= 1

    def _visit(self, node: _Node, name: str) -> str:
        rule_name = name + "-" if name in _RESERVED_NAMES else name or "root"
        prefix = name + "-" if name else ""
        match node:
            case _Ref():
                return self._add_rule(rule_name, self._resolve(node))
            case _AnyOf(children=children):
                names = (self.visit(c, f"{prefix or 'alternative-'}{i}")
                         for i, c in enumerate(children))
                return self._add_rule(rule_name, " | ".join(names))
            case _AllOf():
                return self._all_of(node, name, rule_name)
            case _Const(literal=literal):
                return self._add_rule(rule_name, _quote(literal))
            case _Enum(literals=literals):
                return self._add_rule(rule_name, f"({' | '.join(map(_quote, literals))})")
            case _Object(properties=[], additional=_Any()):
                return self._add_rule(rule_name, self._builtin("object"))
            case _Object(properties=properties, additional=additional):
                pairs = [(p.name, p.schema) for p in properties]
                required = {p.name for p in properties if p.required}
                return self._add_rule(rule_name,
                                      self._object_rule(pairs, required, name, additional))
            case _Tuple(items=items):
                names = (self.visit(item, f"{prefix}tuple-{i}") for i, item in enumerate(items))
                return self._add_rule(rule_name, f'"[" space {_ITEM_SEPARATOR.join(names)} space "]"')
            case _Array(items=_Any(), min_items=0, max_items=None):
                return self._visit_primitive(rule_name, "array")
            case _Array(items=items, min_items=low, max_items=high):
                item = self._repeat(self.visit(items, f"{prefix}item"), low, high, '"," space')
                return self._add_rule(rule_name, f'"[" space {item} space "]"')
            case _String():
                return self._string(node, rule_name)
            case _Integer(expression=None):
                return self._visit_primitive(rule_name, "integer")
            case _Integer(expression=expression, expansion=expansion):
                self._expand(expansion)
                return self._add_rule(rule_name, f"({expression})")
            case _Primitive(type=kind):
                return self._visit_primitive(rule_name, kind)
            case _:  # _Any
                return self._add_rule(rule_name, self._builtin("value"))

    def _add_rule(self, name: str, rule: str) -> str:
        """Adds `rule` under `name` escaped, or if that holds another rule, under the escaped
        name and the first number that is free or already holds this rule (as llama.cpp), found
        without trying the numbers one by one each time."""
        self._write(len(name) + len(rule))
        base = _INVALID_RULE_CHARS.sub("-", name)
        if self._rules.get(base, rule) == rule:
            self._rules[base] = rule
            return base
        number = self._free_number.get(base, 0)
        while (taken := base + str(number)) in self._rules:
            self._numbered.setdefault((base, self._rules[taken]), number)
            number += 1
        self._free_number[base] = number
        key = base + str(self._numbered.get((base, rule), number))
        self._rules[key] = rule
        return key

    def _write(self, chars: int) -> None:
        self._written += chars
        if self._written > MAX_GRAMMAR_CHARS:
            raise SchemaError(f"the grammar takes more than {MAX_GRAMMAR_CHARS} characters to "
                              "write")

    def _builtin(self, name: str) -> str:
        return self._primitive(name, name)

    def _visit_primitive(self, rule_name: str, builtin: str) -> str:
        """A built-in type is written as its own rule, but at the root as the root rule."""
        return self._primitive("root" if rule_name == "root" else builtin, builtin)

    def _primitive(self, name: str, builtin: str) -> str:
        """A built-in rule under `name`, and the built-in rules it needs under their own."""
        rule, needs = _BUILTIN_RULES[builtin]
        added = self._add_rule(name, rule)
        for need in needs:
            if need not in self._rules:
                self._builtin(need)
        return added

    def _repeat(self, item: str, low: int, high: int | None, separator: str = "") -> str:
        self._expand(_expansion(low, high))
        return _repetition(item, low, high, separator)

    def _expand(self, rules: int) -> None:
        self._expanded += rules
        if self._expanded > MAX_PARSER_EXPANSION:
            raise SchemaError(f"the schema's repetitions and pattern groups together are above "
                              f"the limit of {MAX_PARSER_EXPANSION} rules in llama.cpp's parser")

    def _resolve(self, ref: _Ref) -> str:
        """The rule of a $ref's target, named after the $ref; only named while it is being
        written, so a recursive schema refers to its own rule."""
        name = "ref" + _INVALID_RULE_CHARS.sub("-", ref.ref[1:])
        if name not in self._rules and ref.ref not in self._resolving:
            assert ref.target is not None
            self._resolving.add(ref.ref)
            name = self.visit(ref.target, name)
            self._resolving.discard(ref.ref)
        return name

    def _all_of(self, node: _AllOf, name: str, rule_name: str) -> str:
        """The enum values common to all parts, if any; else one object of all parts'
        properties (those of anyOf parts optional)."""
        properties: list[tuple[str, _Node]] = []
        required: set[str] = set()
        enum_counts: dict[str, int] = {}

        def gather(part: _Node, is_required: bool) -> None:
            while isinstance(part, _Ref):
                assert part.target is not None
                part = part.target
            if isinstance(part, _Object):
                for prop in part.properties:
                    self._gathered += 1
                    if self._gathered > MAX_SCHEMA_NODES:
                        raise SchemaError(f"allOf gathers more than {MAX_SCHEMA_NODES} properties")
                    properties.append((prop.name, prop.schema))
                    if is_required:
                        required.add(prop.name)
            elif isinstance(part, _Enum):
                for literal in part.literals:
                    self._write(len(literal))
                    quoted = _quote(literal)
                    enum_counts[quoted] = enum_counts.get(quoted, 0) + 1

        for child in node.children:
            if isinstance(child, _AnyOf):
                for alternative in child.children:
                    gather(alternative, False)
            else:
                gather(child, True)
        common = sorted(v for v, n in enum_counts.items() if n == len(node.children))
        if common:
            return self._add_rule(rule_name, f"({' | '.join(common)})")
        return self._add_rule(rule_name, self._object_rule(properties, required, name, None))

    def _object_rule(self, properties: list[tuple[str, _Node]], required: set[str], name: str,
                     additional: _Node | None) -> str:
        """Required properties in order, then any of the optional ones in order; other
        properties (additional) after all named ones."""
        prefix = name + "-" if name else ""
        pairs: dict[str, str] = {}  # property name ("*": any other) → its key-value rule
        required_names: list[str] = []
        optional_names: list[str] = []
        for prop_name, schema in properties:
            value = self.visit(schema, prefix + prop_name)
            pairs[prop_name] = self._add_rule(
                f"{prefix}{prop_name}-kv", f'{_quote(_json_string(prop_name))} space ":" space {value}')
            (required_names if prop_name in required else optional_names).append(prop_name)
        if additional is not None:
            other = prefix + "additional"
            value = (self._builtin("value") if isinstance(additional, _Any)
                     else self.visit(additional, other + "-value"))
            key = (self._add_rule(other + "-k", self._excluded([n for n, _ in properties]))
                   if properties else self._builtin("string"))
            pairs["*"] = self._add_rule(other + "-kv", f'{key} ":" space {value}')
            optional_names.append("*")
        if not required_names and not optional_names:
            return '"{" space "}"'
        rule = '"{" space ' + ' "," space '.join(pairs[n] for n in required_names)
        if optional_names:
            alternatives = self._optional_alternatives(optional_names, pairs, prefix)
            rule += (f' ( "," space ( {alternatives} ) )?' if required_names
                     else f" ({alternatives} )?")
        return rule + ' space "}"'

    def _optional_alternatives(self, names: list[str], pairs: dict[str, str], prefix: str) -> str:
        """One alternative per optional property: it, then any of those after it, each through
        a `-rest` rule. llama.cpp rebuilds every rest rule for every alternative (quadratic);
        each is written once here, last first, which is the order llama.cpp adds them in."""
        def repeated(key: str) -> str:
            return f'( "," space {pairs[key]} )' + ("*" if key == "*" else "?")

        rests = [""] * len(names)  # rests[i]: " " and the rule for the properties after i
        for i in range(len(names) - 2, -1, -1):
            rest = self._add_rule(f"{prefix}{names[i]}-rest", repeated(names[i + 1]) + rests[i + 1])
            rests[i] = " " + rest
        return " | ".join(
            pairs[key] + (f' ( "," space {pairs[key]} )*' if key == "*" else "") + rests[i]
            for i, key in enumerate(names))

    def _excluded(self, names: list[str]) -> str:
        """A JSON string that is none of `names`, through a trie of them (llama.cpp's
        _not_strings). `\\` and `]` are escaped in classes, where llama.cpp writes them raw and
        its own parser then refuses the grammar."""
        char = self._builtin("char")
        trie: dict[str, Any] = {}
        for word in names:
            node = trie
            for c in word:
                node = node.setdefault(c, {})

        def branches(node: dict[str, Any]) -> str:
            parts = []
            for c in sorted(node):
                shown = c.translate(_CLASS_ESCAPES)
                parts.append(f"[{shown}] ({branches(node[c])})" if node[c] else f"[{shown}] {char}+")
            rejected = "".join(sorted(node)).translate(_CLASS_ESCAPES)
            return " | ".join(parts) + (f' | [^"{rejected}] {char}*' if node else "")

        optional = "" if "" in names else "?"
        return f'["] ( {branches(trie)} ){optional} ["]'

    def _string(self, node: _String, rule_name: str) -> str:
        if node.pattern:
            return self._pattern(node, rule_name)
        if node.format == "uuid":
            return self._visit_primitive(rule_name, "uuid")
        if node.format:
            return self._add_rule(rule_name, self._builtin(f"{node.format}-string"))
        if node.min_length > 0 or node.max_length is not None:
            char = self._builtin("char")
            return self._add_rule(
                rule_name, rf'"\"" {self._repeat(char, node.min_length, node.max_length)} "\""')
        return self._visit_primitive(rule_name, "string")

    def _pattern(self, node: _String, rule_name: str) -> str:
        """The pattern's rule; a pattern with no grammar equivalent accepts any string, as in
        llama.cpp. A first pass adds no rules, so an unsupported pattern leaves none behind."""
        self._pattern_chars += len(node.pattern)  # the same pattern may be met more than once
        if self._pattern_chars > MAX_PATTERN_CHARS:
            raise _error(node.path, f"patterns together are longer than {MAX_PATTERN_CHARS} "
                                    "characters")
        try:
            _Pattern(node.pattern, rule_name, lambda name, _: name).translate()
        except _Unsupported:
            return self._add_rule(rule_name, self._builtin("string"))
        except _Invalid as exc:
            raise _error(node.path, f"invalid pattern {_shown(node.pattern)}: {exc}") from None
        except SchemaError as exc:
            raise _error(node.path, str(exc)) from None
        pattern = _Pattern(node.pattern, rule_name, self._add_rule)
        rule = pattern.translate()
        self._expand(pattern.expansion)
        return rule

"""Modelfiles: reading one into the parts of a model (`parse`, `to_create_spec`) and printing a
model as one (`format_modelfile`, what /api/show returns).

The grammar is Ollama's (parser/parser.go), which has no escapes:

- One instruction per line: a keyword in any case, a space or tab, then its argument. Blank
  lines and lines whose first non-blank character is `#` are skipped; a `#` later in a line is
  part of the argument.
- `PARAMETER <name> <value>` and `MESSAGE <role> <content>` take a word before the value; the
  parameter name and the role are case-sensitive (`temperature`, `user`), as in Ollama.
- An argument runs to the end of its line, surrounding whitespace removed. If it begins with
  `\"\"\"` it runs on, across lines, to the first line that ends with `\"\"\"`; if it begins with a
  single `"`, to the first line that ends with `"`. The outer quotes are removed and everything
  between them is kept as written: newlines, quotes, backslashes. So a text can hold `\"\"\"`
  anywhere except at the end of one of its lines (not the last), which no Modelfile can express.
- FROM is required (anywhere in the file); several FROMs must each name a GGUF file (the
  weights and a projector). PARAMETER values are typed by `workers.options`,
  as Ollama's api.FormatParams types them (a float is a float32, so `0.123456789` is kept as
  `0.12345679`); `stop` accumulates over repeated lines, any other repeated parameter, TEMPLATE
  or SYSTEM: the last one wins.

Differences from Ollama, all on input Ollama refuses or mangles: extra blanks after PARAMETER or
MESSAGE are allowed, CRLF counts as one line in error messages, control characters in texts are
kept (Ollama drops them), and every error names its line.
"""

from __future__ import annotations

import codecs
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import numpy as np

from store.create import CreateSpec, is_path
from store.errors import InvalidInput
from workers.options import BY_NAME, IGNORED, MAX_STOP_STRINGS, InvalidOption, Option, convert

MAX_MODELFILE_BYTES = 16 << 20

INSTRUCTIONS = ("from", "parameter", "template", "system", "adapter", "license", "message",
                "requires", "draft", "renderer", "parser")
ROLES = ("system", "user", "assistant")
_UNSUPPORTED = ("renderer", "parser")  # parsed, but no model can hold them yet

# What Go's strings.TrimSpace removes (unicode.IsSpace).
_GO_SPACE = ("\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007"
             "\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000")
_NEWLINE = re.compile(r"(\r\n|\r|\n)")
_BLANK = re.compile(r"[ \t]")
_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
                    r"|[+-]?(?:inf|infinity|nan)", re.IGNORECASE)
_BOOLS = {"1": True, "t": True, "T": True, "true": True, "True": True, "TRUE": True,
          "0": False, "f": False, "F": False, "false": False, "False": False, "FALSE": False}
_SEMVER = re.compile(r"v?(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*)"
                     r"(?:\.(?:0|[1-9][0-9]*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?)?)?")


def parse_requires(text: str) -> str:
    """The Ollama version a model needs (REQUIRES, or create's `requires`), without its `v`."""
    if not _SEMVER.fullmatch(text):
        raise ValueError("requires must be a valid semver (e.g. 0.14.0)")
    return text.removeprefix("v")


_FLOAT32_MAX = 3.4028234663852886e38
_ANY_QUOTE = ("", '"', '"""')


class ModelfileError(InvalidInput):
    """A Modelfile that cannot be used; `line` is where (None: the whole file)."""

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line is not None else message)
        self.line = line


@dataclass(frozen=True)
class Command:
    name: str  # the instruction, lower case: "from", "parameter", "message", ...
    args: str  # its argument, quotes removed; for PARAMETER and MESSAGE, what follows the word
    line: int  # where it starts, from 1
    key: str = ""  # PARAMETER: the option's name; MESSAGE: the role
    value: Any = None  # PARAMETER: the typed value (None: ignored); REQUIRES: the version


@dataclass
class Modelfile:
    commands: list[Command] = field(default_factory=list)

    def named(self, name: str) -> list[Command]:
        return [cmd for cmd in self.commands if cmd.name == name]

    def _last(self, name: str) -> str | None:
        found = self.named(name)
        return found[-1].args if found else None

    @property
    def from_(self) -> str:
        """The last FROM argument, unresolved (a model name, a blob or a path)."""
        return self._last("from") or ""

    @property
    def template(self) -> str | None:
        return self._last("template")

    @property
    def system(self) -> str | None:
        return self._last("system")

    @property
    def requires(self) -> str | None:
        found = self.named("requires")
        return found[-1].value if found else None

    @property
    def parameters(self) -> dict[str, Any]:
        """Typed values; `stop` is the list of every stop line, others the last line's value."""
        params: dict[str, Any] = {}
        for cmd in self.named("parameter"):
            if cmd.value is None:
                continue
            if BY_NAME[cmd.key].kind is list:
                params.setdefault(cmd.key, []).append(cmd.value)
            else:
                params[cmd.key] = cmd.value
        return params

    @property
    def messages(self) -> list[dict[str, str]]:
        return [{"role": cmd.key, "content": cmd.args} for cmd in self.named("message")]

    @property
    def licenses(self) -> list[str]:
        return [cmd.args for cmd in self.named("license")]

    @property
    def adapters(self) -> list[str]:
        return [cmd.args for cmd in self.named("adapter")]

    @property
    def drafts(self) -> list[str]:
        return [cmd.args for cmd in self.named("draft")]


def parse(text: str | bytes) -> Modelfile:
    """The Modelfile's commands in order; ModelfileError names the line of the first fault."""
    lines, seps = _split(_decode(text))
    commands: list[Command] = []
    stops = 0
    i = 0
    while i < len(lines):
        lineno = i + 1
        stripped = lines[i].lstrip(" \t")
        if not stripped or stripped[0] == "#":
            i += 1
            continue
        name, key, rest = _head(stripped, lineno)
        args, i = _read_value(lines, seps, i, rest)
        value: Any = None
        if name == "parameter":
            value = _typed(key, args, lineno)
            stops += key == "stop"
            if stops > MAX_STOP_STRINGS:
                raise ModelfileError(f'parameter "stop" takes at most {MAX_STOP_STRINGS} strings',
                                     lineno)
        elif name in ("from", "adapter", "draft") and not args:
            raise ModelfileError(f"{name.upper()} needs a model name or a path", lineno)
        elif name == "requires":
            try:
                value = parse_requires(args)
            except ValueError as exc:
                raise ModelfileError(str(exc), lineno) from None
        commands.append(Command(name, args, lineno, key, value))
    if not any(cmd.name == "from" for cmd in commands):
        raise ModelfileError("no FROM line")
    return Modelfile(commands)


def _head(line: str, lineno: int) -> tuple[str, str, str]:
    """(instruction, parameter name or role, the rest of the line) of an instruction's line."""
    word, blank, rest = _cut(line)
    name = word.lower() if word.isascii() and word.isalpha() else ""
    if name not in INSTRUCTIONS:
        raise ModelfileError(f"unknown instruction {_show(word)}; expected one of "
                             f"{', '.join(n.upper() for n in INSTRUCTIONS)}", lineno)
    key = ""
    if name in ("parameter", "message"):
        key, blank, rest = _cut(rest.lstrip(" \t")) if blank else ("", "", "")
        if not key:
            what = "a name" if name == "parameter" else "a role"
            raise ModelfileError(f"{name.upper()} needs {what} and a value", lineno)
        if name == "parameter" and key not in BY_NAME and key not in IGNORED:
            raise ModelfileError(f"unknown parameter {_show(key)}", lineno)
        if name == "message" and key not in ROLES:
            raise ModelfileError('message role must be one of "system", "user", or '
                                 f'"assistant", not {_show(key)}', lineno)
    if not blank:
        raise ModelfileError(f"{name.upper()}{' ' + key if key else ''} has no value", lineno)
    return name, key, rest


def to_create_spec(mf: Modelfile, model_name: str) -> CreateSpec:
    """What /api/create makes of the Modelfile; FROM is passed on unresolved in `from_` (several
    FROM paths, the weights and a projector, in `from_paths`). ADAPTER and DRAFT paths are
    passed on unresolved too. Raises ModelfileError for what no model here can hold (renderers,
    parsers)."""
    for cmd in mf.commands:
        if cmd.name in _UNSUPPORTED:
            raise ModelfileError(f"{cmd.name.upper()} is not supported", cmd.line)
    froms = mf.named("from")
    if len(froms) > 1:  # each a file, as Ollama's client sends every FROM file in `files`
        for cmd in froms:
            if not is_path(cmd.args):
                raise ModelfileError("with more than one FROM, each must be the path of a GGUF "
                                     "file (the weights and a projector), not a model name",
                                     cmd.line)
    return CreateSpec(model=model_name, from_=mf.from_ if len(froms) == 1 else "",
                      from_paths=[cmd.args for cmd in froms] if len(froms) > 1 else [],
                      template=mf.template, system=mf.system,
                      parameters=mf.parameters, licenses=mf.licenses,
                      messages=mf.messages or None, adapter_paths=mf.adapters,
                      draft_paths=mf.drafts, requires=mf.requires or "")


def format_modelfile(from_path: str, *, name: str | None = None, template: str | None = None,
                     system: str | None = None, parameters: Mapping[str, Any] | None = None,
                     messages: Iterable[Mapping[str, Any]] = (), licenses: Iterable[str] = (),
                     adapters: Iterable[str] = (), projectors: Iterable[str] = (),
                     draft: str | None = None) -> str:
    """The Modelfile /api/show prints; `parse` reads every value back unchanged, except a text
    with a line (not its last) ending in `\"\"\"`, which the grammar cannot hold (printed as
    Ollama would). `name` adds Ollama's header; empty texts are left out; the draft model and
    then a projector (a second FROM) follow the adapters, as Ollama prints them."""
    out = []
    if name:
        out += ['# Modelfile generated by "ollama show"',
                "# To build a new Modelfile based on this one, replace the FROM line with:",
                f"# FROM {name}", ""]
    out.append(f"FROM {_quote(str(from_path), *_ANY_QUOTE)}")
    out += [f"ADAPTER {_quote(path, *_ANY_QUOTE)}" for path in adapters]
    if draft:
        out.append(f"DRAFT {_quote(draft, *_ANY_QUOTE)}")
    out += [f"FROM {_quote(path, *_ANY_QUOTE)}" for path in projectors]
    if template:
        out.append(f"TEMPLATE {_quote_text(template)}")
    if system:
        out.append(f"SYSTEM {_quote_text(system)}")
    params = parameters or {}
    for key in sorted(params):
        values = params[key] if isinstance(params[key], list) else [params[key]]
        out += [f"PARAMETER {key} {_param_text(v)}" for v in values]
    for msg in messages:
        out.append(f"MESSAGE {msg.get('role', '')} {_quote_text(str(msg.get('content', '')))}")
    out += [f"LICENSE {_quote_text(text)}" for text in licenses]
    return "\n".join(out) + "\n"


def _decode(text: str | bytes) -> str:
    if isinstance(text, (bytes, bytearray, memoryview)):
        data = bytes(text)
        if len(data) > MAX_MODELFILE_BYTES:
            raise ModelfileError(f"Modelfile is larger than {MAX_MODELFILE_BYTES >> 20} MiB")
        try:
            if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
                return data.decode("utf-16")
            return data.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ModelfileError("Modelfile is not valid UTF-8") from None
    elif not isinstance(text, str):
        raise ModelfileError("Modelfile must be text")
    if len(text) > MAX_MODELFILE_BYTES // 4 and (
            len(text) > MAX_MODELFILE_BYTES
            or len(text.encode("utf-8", "surrogatepass")) > MAX_MODELFILE_BYTES):
        raise ModelfileError(f"Modelfile is larger than {MAX_MODELFILE_BYTES >> 20} MiB")
    return text.removeprefix("\ufeff")


def _split(text: str) -> tuple[list[str], list[str]]:
    """Lines and the newline after each but the last (\\r\\n, \\r or \\n, kept for texts)."""
    parts = _NEWLINE.split(text)
    return parts[0::2], parts[1::2]


def _cut(text: str) -> tuple[str, str, str]:
    """(first word, the blank after it or "", the rest)."""
    m = _BLANK.search(text)
    if m is None:
        return text, "", ""
    return text[:m.start()], m.group(), text[m.end():]


def _read_value(lines: list[str], seps: list[str], i: int, rest: str) -> tuple[str, int]:
    """The argument starting with `rest` on line i+1 and the index of the line after it."""
    first = rest.strip(_GO_SPACE)
    done, value = _unquote(first)
    if done:
        return value, i + 1
    opener = '"""' if first.startswith('"""') else '"'
    parts = [rest]
    for j in range(i + 1, len(lines)):
        parts += (seps[j - 1], lines[j])
        tail = lines[j].rstrip(_GO_SPACE)
        if tail.endswith(opener):  # the whole argument now ends with its closing quote
            whole = "".join(parts).strip(_GO_SPACE)
            return whole[len(opener):-len(opener)], j + 1
    raise ModelfileError(f"unterminated {opener} string: no later line ends with {opener}", i + 1)


def _unquote(text: str) -> tuple[bool, str]:
    """(complete, value) for an argument that is all on one line, as Ollama's unquote."""
    if text.startswith('"""'):
        if len(text) >= 6 and text.endswith('"""'):
            return True, text[3:-3]
        return False, ""
    if text.startswith('"'):
        if len(text) >= 2 and text.endswith('"'):
            return True, text[1:-1]
        return False, ""
    return True, text


def _typed(key: str, text: str, line: int) -> Any:
    """A PARAMETER value read as Go's strconv does for the option's type, then range-checked."""
    opt = BY_NAME.get(key)
    if opt is None:  # one Ollama ignores
        return None
    value: Any = text
    if opt.kind is bool:
        if text not in _BOOLS:
            raise _bad_value(opt, text, "true or false", line)
        value = _BOOLS[text]
    elif opt.kind is int:
        if not _INT.fullmatch(text) or len(text) > 40:
            raise _bad_value(opt, text, "an integer", line)
        value = int(text)
    elif opt.kind is float:
        if not _FLOAT.fullmatch(text):
            raise _bad_value(opt, text, "a number", line)
        value = float(text)
        if math.isfinite(value) and abs(value) > _FLOAT32_MAX:
            raise ModelfileError(f'parameter "{key}" is out of range', line)
        value = _float32(value)
    try:
        converted = convert(opt, value, "parameter")
    except InvalidOption as e:
        raise ModelfileError(str(e), line) from None
    return converted[0] if opt.kind is list else converted


def _float32(value: float) -> float:
    """The float Ollama stores for a Modelfile's float parameter: FormatParams makes it a float32,
    which JSON carries with the fewest digits that read back as that float32."""
    return float(str(np.float32(value)))


def _bad_value(opt: Option, text: str, expected: str, line: int) -> ModelfileError:
    return ModelfileError(f'invalid value {_show(text)} for parameter "{opt.name}": '
                          f"expected {expected}", line)


def _show(text: str) -> str:
    """`text` quoted for an error message, cut short."""
    return json.dumps(text if len(text) <= 40 else text[:40] + "...", ensure_ascii=False)


def _quote(text: str, *forms: str) -> str:
    """The first of the quotings (none, `"`, `\"\"\"`) that parse reads back as `text`."""
    for quote in forms:
        candidate = quote + text + quote
        lines, seps = _split(candidate)
        try:
            value, end = _read_value(lines, seps, 0, lines[0])
        except ModelfileError:
            continue
        if end == len(lines) and value == text:
            return candidate
    return f'"""{text}"""'


def _quote_text(text: str) -> str:
    return _quote(text, '"""', '"')


def _param_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        return text[:-2] if text.endswith(".0") else text
    return _quote(str(value), "", '"', '"""')  # bare where it reads back, as Ollama prints it

"""Tool calls in streamed model output, found the way Ollama does it.

Ollama (`tools/template.go`, `tools/tools.go`, used by `server/routes.go` ChatHandler for models
without a built-in parser, on the content left after the thinking parser):

* The tool-call *tag* comes from the model's Go template (workers/template/analysis.py), e.g.
  `<tool_call>`, `[TOOL_CALLS]`, `<|tool▁calls▁begin|>`. Without one the tag is `{` (bare JSON
  objects); a template whose block starts with `[` gives `[` (a JSON list).
* Text before the tag streams as content; text that ends with the start of the tag is held back
  until it is decided. Once the tag is seen everything after it is consumed as tool calls and no
  longer streamed as content.
* A call is recognised by the *name of a requested tool* appearing in the buffer (the earliest,
  longest one; a name still being written, such as `say_hello` of `say_hello_world`, waits),
  together with the first complete JSON object in the buffer: its `arguments` or `parameters`
  (an object, or a string holding a JSON object) when it has a `name` key, else an object under
  the tool's name, else (searching nested objects and lists) the object itself. So
  `{"name": ..., "arguments": ...}`, a list of those, and `[TOOL_CALLS]name[ARGS]{...}` all work.
* Names that are not among the requested tools never become calls. With a real tag their text is
  swallowed (Ollama sends nothing for it); with the `{` / `[` tags, a JSON value that closes
  without containing a call, or any non-blank text before the first `{` / `[`, turns the parser
  off and the text goes out as content; a still-open JSON value is sent as content at the end if
  no call was found.

Calls are dicts shaped like Ollama's api.ToolCall JSON:
`{"id": "call_xxxxxxxx", "function": {"index": 0, "name": ..., "arguments": {...}}}`.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator
from typing import Any

from workers.template.analysis import analyze, go_strip

_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def tool_call_id() -> str:
    """An id like Ollama's: "call_" and 8 lowercase letters or digits."""
    return "call_" + "".join(random.choices(_ID_ALPHABET, k=8))


_LOOKING_FOR_TAG = 0
_TOOL_CALLING = 1
_DONE = 2


class ToolCallParser:
    """Splits streamed model text into content and tool calls."""

    def __init__(self, template: str | None, tool_names: Iterable[str], *,
                 tag: str | None = None) -> None:
        self.tag = tag if tag else analyze(template).tool_call_tag
        self.tool_names = [n for n in tool_names if n]
        self._longest = max((len(n) for n in self.tool_names), default=0)
        self._state = _LOOKING_FOR_TAG
        self._buffer = ""
        self._count = 0
        # Both scans run over the buffer from its start, as Ollama's do on every Add; they resume
        # where they stopped, so a long call costs linear, not quadratic, time.
        self._objects = _ObjectScan()
        self._value = _ValueScan(self.tag)

    @property
    def json_tag(self) -> bool:
        return self.tag in ("{", "[")

    def feed(self, text: str) -> tuple[str, list[dict[str, Any]]]:
        """(content to stream now, tool calls completed by this text)."""
        if self._state == _DONE:
            return text, []
        self._buffer += text
        content = ""
        if self._state == _LOOKING_FOR_TAG:
            i, found = self._find_tag()
            if i < 0:
                content, self._buffer = self._buffer, ""
            else:
                content, self._buffer = self._buffer[:i], self._buffer[i:]
            # With a bare { or [ tag, tool calls must be the first non-blank output.
            if self.json_tag and go_strip(content):
                self._state = _DONE
                rest, self._buffer = self._buffer, ""
                return content + rest, []
            if not found:
                return content, []
            self._state = _TOOL_CALLING
        calls: list[dict[str, Any]] = []
        while (call := self._parse_call()) is not None:
            calls.append(call)
        if self._json_value_closed():
            # The JSON value the tag opened is complete: what is left was not a tool call.
            self._state = _DONE
            content, self._buffer = self._buffer, ""
        return content, calls

    def finish(self) -> tuple[str, list[dict[str, Any]]]:
        """(content, calls) still held when generation ends. Calls are always reported as soon
        as they complete, so the list is empty; the content is a partial tag that never
        completed, or with a { / [ tag an unfinished JSON value when no call was found."""
        buffer, self._buffer = self._buffer, ""
        state, self._state = self._state, _DONE
        if state == _LOOKING_FOR_TAG:
            return buffer, []
        if state == _TOOL_CALLING and self._count == 0 and self.json_tag:
            return buffer, []
        return "", []

    def _find_tag(self) -> tuple[int, bool]:
        i = self._buffer.find(self.tag)
        if i >= 0:
            return i, True
        for n in range(min(len(self._buffer), len(self.tag)), 0, -1):
            if self._buffer.endswith(self.tag[:n]):
                return len(self._buffer) - n, False
        return -1, False

    def _parse_call(self) -> dict[str, Any] | None:
        name, end = self._find_tool()
        if name is None:
            return None
        args, i = self._find_arguments(name)
        if args is None:
            return None
        end = max(end, i)
        call = {"id": tool_call_id(),
                "function": {"index": self._count, "name": name, "arguments": args}}
        self._count += 1
        # Like Ollama, keep the object's closing brace: the next search skips over it.
        self._buffer = self._buffer[end:]
        self._objects = _ObjectScan()
        self._value = _ValueScan(self.tag)
        return call

    def _find_arguments(self, tool: str) -> tuple[dict[str, Any] | None, int]:
        """The arguments in the first complete JSON object of the buffer, and the index of that
        object's closing brace; (None, 0) when there is no such object yet."""
        found = self._objects.first_object(self._buffer)
        if found is None:
            return None, 0
        data, i = found
        try:
            args, ok = _arguments_in(tool, data)
        except RecursionError:
            args, ok = None, True
        return (args, i) if ok else (data, i)

    def _find_tool(self) -> tuple[str | None, int]:
        buf = self._buffer
        if not buf:
            return None, 0
        # The buffer may end in the middle of a longer name ("get" of "get_weather"): wait.
        for n in range(1, min(len(buf), self._longest) + 1):
            tail = buf[-n:]
            if any(len(tail) < len(name) and name.startswith(tail) for name in self.tool_names):
                return None, 0
        found: str | None = None
        start = end = -1
        for name in self.tool_names:
            pos = buf.find(name)
            if pos < 0:
                continue
            if found is not None and (pos > start or (pos == start and len(name) <= len(found))):
                continue
            found, start, end = name, pos, pos + len(name)
        return found, (end if found is not None else 0)

    def _json_value_closed(self) -> bool:
        """With a { or [ tag: whether the buffer holds a complete {...} / [...] value."""
        return self._value.closed(self._buffer)


def _reject_constant(name: str) -> Any:
    raise ValueError(name)  # NaN and Infinity are not JSON (Go's decoder refuses them)


def _loads(text: str) -> Any:
    return json.loads(text, parse_constant=_reject_constant)


def _arguments_under(key: str, obj: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
    value = obj.get(key)
    if isinstance(value, dict):
        return value, True
    if isinstance(value, str):
        try:
            decoded = _loads(value)
        except ValueError:
            return None, False
        if decoded is None or isinstance(decoded, dict):
            return decoded, True
    return None, False


def _arguments_in(tool: str, obj: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]:
    if "name" in obj:
        for key in ("arguments", "parameters"):
            args, ok = _arguments_under(key, obj)
            if ok:
                return args, True
        return None, True  # a call without usable arguments: not (yet) a tool call
    args, ok = _arguments_under(tool, obj)
    if ok:
        return args, True
    for value in obj.values():
        children = [value] if isinstance(value, dict) else value if isinstance(value, list) else []
        for child in children:
            if isinstance(child, dict):
                args, ok = _arguments_in(tool, child)
                if ok:
                    return args, True
    return None, False


class _Structure:
    """Walks a growing buffer and yields the characters outside JSON strings, remembering where
    it stopped (and whether it stopped inside a string), so each character is read once."""

    def __init__(self) -> None:
        self.pos = 0
        self.in_string = self.escaped = False

    def chars(self, buffer: str) -> Iterator[tuple[int, str]]:
        while self.pos < len(buffer):
            i, c = self.pos, buffer[self.pos]
            self.pos += 1
            if self.escaped:
                self.escaped = False
            elif c == "\\":
                self.escaped = True
            elif c == '"':
                self.in_string = not self.in_string
            elif not self.in_string:
                yield i, c


class _ValueScan:
    """Whether the buffer holds a complete {...} (tag "{") or [...] (tag "[") value, strings
    skipped; never for other tags."""

    def __init__(self, tag: str) -> None:
        self.opener, self.closer = {"{": ("{", "}"), "[": ("[", "]")}.get(tag, ("", ""))
        self.depth = 0
        self._walk = _Structure()

    def closed(self, buffer: str) -> bool:
        if not self.opener:
            return False
        for _, c in self._walk.chars(buffer):
            if c == self.opener:
                self.depth += 1
            elif c == self.closer:
                self.depth -= 1
                if self.depth == 0:
                    return True
        return False


class _ObjectScan:
    """The first complete, valid JSON object in the buffer and the index of its closing brace
    (Ollama's findArguments scan: braces outside strings, invalid candidates skipped)."""

    def __init__(self) -> None:
        self.depth = 0
        self.start = -1
        self.found: tuple[dict[str, Any], int] | None = None
        self._walk = _Structure()

    def first_object(self, buffer: str) -> tuple[dict[str, Any], int] | None:
        if self.found is not None:
            return self.found
        for i, c in self._walk.chars(buffer):
            if c == "{":
                if self.depth == 0:
                    self.start = i
                self.depth += 1
            elif c == "}":
                self.depth -= 1
                if self.depth == 0 and self.start != -1:
                    try:
                        data = _loads(buffer[self.start:i + 1])
                    except (ValueError, RecursionError):
                        data = None
                    self.start = -1
                    if isinstance(data, dict):
                        self.found = (data, i)
                        return self.found
                    continue  # not a valid object: keep looking
                if self.depth < 0:
                    self.depth = 0
        return None

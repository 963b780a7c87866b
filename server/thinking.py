"""Thinking traces in streamed model output, split off the way Ollama does it.

Ollama (`thinking/template.go`, `thinking/parser.go`, used by `server/routes.go` ChatHandler and
GenerateHandler for models without a built-in parser):

* The tags that surround a thinking trace are *inferred from the model's Go template*: find a
  reference to `.Thinking` inside a `{{range}}` whose pipeline uses `.Messages`, go up to the
  nearest list of nodes and take its first and last text nodes (trimmed) as opening and closing
  tag. A model "supports thinking" (capability `thinking`) exactly when both tags are found.
* When the request has `think: true` and the model supports it, the generated text is fed through
  a small state machine: whitespace before the opening tag is dropped; any other text before it
  means the model is not thinking and everything passes through as content untouched; whitespace
  just after the opening and just after the closing tag is dropped; a tag split across chunks is
  held back until it is decided. Only the first `<think>...</think>` block is thinking.
* When the rendered prompt already ends with the opening tag (the template prefilled `<think>`),
  the parser is fed the opening tag before the first chunk.

This module parses the template with gotpl's parser (the same Go template syntax our workers
render), never executing it.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from gotpl.parse import (
    ActionNode,
    BlockNode,
    CommandNode,
    FieldNode,
    IfNode,
    ListNode,
    ParenthesizedNode,
    PipeNode,
    RangeNode,
    TemplateCallNode,
    TextNode,
    TokenKind,
    WithNode,
    lex,
    parse_template,
)

DEFAULT_OPENING_TAG = "<think>"
DEFAULT_CLOSING_TAG = "</think>"

# Go's unicode.IsSpace differs from str.isspace only on the C0 separators U+001C..U+001F.
_NOT_GO_SPACE = frozenset("\x1c\x1d\x1e\x1f")


def _is_go_space(char: str) -> bool:
    return char.isspace() and char not in _NOT_GO_SPACE


def go_lstrip(text: str) -> str:
    """strings.TrimLeftFunc(text, unicode.IsSpace)."""
    i = 0
    while i < len(text) and _is_go_space(text[i]):
        i += 1
    return text[i:]


def go_strip(text: str) -> str:
    """strings.TrimSpace(text)."""
    text = go_lstrip(text)
    j = len(text)
    while j > 0 and _is_go_space(text[j - 1]):
        j -= 1
    return text[:j]


@lru_cache(maxsize=64)
def parse_go_template(source: str) -> ListNode | None:
    """The root node list of a Go template (as text/template's Tree.Root), or None if the text
    does not parse as one. Functions the template calls need not be known: every identifier is
    accepted as a function name, as only the shape of the tree matters here."""
    try:
        identifiers = {t.value for t in lex(source) if t.kind is TokenKind.IDENTIFIER}
        return parse_template(source, functions=identifiers).root
    except Exception:  # a template that is not Go syntax (or a Jinja one): nothing to infer
        return None


def _children(node: Any) -> list[Any]:
    """The nodes Ollama's templateVisit descends into, in its order."""
    if isinstance(node, ListNode):
        return list(node.nodes)
    if isinstance(node, (IfNode, WithNode, RangeNode)):
        return [c for c in (node.pipeline, node.body, node.else_body) if c is not None]
    if isinstance(node, ActionNode):
        return [node.pipeline]
    if isinstance(node, (TemplateCallNode, BlockNode)):
        # {{template}} and {{block}} contribute only their pipeline to the root tree.
        return [node.pipeline] if node.pipeline is not None else []
    if isinstance(node, PipeNode):
        return list(node.commands)
    if isinstance(node, CommandNode):
        return list(node.arguments)
    if isinstance(node, ParenthesizedNode) and not node.fields:
        # A bare (pipeline) is a PipeNode in Go; (pipeline).Field is a ChainNode, a leaf there.
        return [node.pipeline]
    return []


def _range_uses_field(range_node: RangeNode, field: str) -> bool:
    stack: list[Any] = [range_node.pipeline]
    while stack:
        node = stack.pop()
        if isinstance(node, FieldNode) and node.fields and node.fields[0] == field:
            return True
        stack.extend(_children(node))
    return False


def infer_tags(template: str | None) -> tuple[str, str]:
    """The (opening, closing) thinking tags of a Go chat template, ("", "") when none are found
    (Ollama's thinking.InferTags; a later match overrides an earlier one, tag by tag)."""
    root = parse_go_template(template) if template else None
    if root is None:
        return "", ""
    opening = closing = ""
    ancestors: list[Any] = []

    def visit(node: Any) -> None:
        nonlocal opening, closing
        ancestors.append(node)
        if isinstance(node, FieldNode) and node.fields and node.fields[0] == "Thinking":
            ranges = [a for a in ancestors if isinstance(a, RangeNode)]
            if ranges and _range_uses_field(ranges[-1], "Messages"):
                lists = [a for a in ancestors if isinstance(a, ListNode)]
                if lists:
                    first, last = lists[-1].nodes[0], lists[-1].nodes[-1]
                    if isinstance(first, TextNode):
                        opening = go_strip(first.text)
                    if isinstance(last, TextNode):
                        closing = go_strip(last.text)
        for child in _children(node):
            visit(child)
        ancestors.pop()

    try:
        visit(root)
    except RecursionError:
        return "", ""
    return opening, closing


def supports_thinking(template: str | None) -> bool:
    """Ollama's `thinking` capability from a Go template: both thinking tags can be inferred."""
    opening, closing = infer_tags(template)
    return bool(opening and closing)


# States, as in Ollama's thinking.Parser.
_LOOKING_FOR_OPENING = 0  # no non-whitespace seen yet
_STARTED_EATING_WHITESPACE = 1  # opening tag seen, dropping whitespace after it
_THINKING = 2
_DONE_EATING_WHITESPACE = 3  # closing tag seen, dropping whitespace after it
_DONE = 4


class ThinkingParser:
    """Splits streamed model text into (thinking, content)."""

    def __init__(self, opening_tag: str = DEFAULT_OPENING_TAG,
                 closing_tag: str = DEFAULT_CLOSING_TAG, *, prompt: str = "") -> None:
        if not opening_tag or not closing_tag:
            raise ValueError("thinking tags must not be empty")
        self.opening_tag = opening_tag
        self.closing_tag = closing_tag
        self._state = _LOOKING_FOR_OPENING
        self._acc = ""
        # The template already opened the thinking block at the end of the prompt.
        if go_strip(prompt).endswith(opening_tag):
            self.feed(opening_tag)

    @classmethod
    def from_template(cls, template: str | None, *, prompt: str = "") -> ThinkingParser:
        """A parser with the tags inferred from `template`, `<think>`/`</think>` when none are."""
        opening, closing = infer_tags(template)
        if not (opening and closing):
            opening, closing = DEFAULT_OPENING_TAG, DEFAULT_CLOSING_TAG
        return cls(opening, closing, prompt=prompt)

    @property
    def thinking_done(self) -> bool:
        """True once the text is known to be past (or without) the thinking block."""
        return self._state in (_DONE_EATING_WHITESPACE, _DONE)

    def feed(self, text: str) -> tuple[str, str]:
        """(thinking, content) that can be sent now; text that may still turn out to be a tag
        is held back."""
        self._acc += text
        thinking: list[str] = []
        content: list[str] = []
        more = True
        while more:
            t, c, more = self._eat()
            thinking.append(t)
            content.append(c)
        return "".join(thinking), "".join(content)

    def finish(self) -> tuple[str, str]:
        """(thinking, content) still held back when generation ends: a partial tag that never
        completed is released as what it was inside of. Leading whitespace stays dropped."""
        acc, self._acc = self._acc, ""
        if self._state == _THINKING:
            return acc, ""
        if self._state == _LOOKING_FOR_OPENING:
            return "", acc if go_strip(acc) else ""
        if self._state == _DONE:
            return "", acc
        return "", ""

    def _eat(self) -> tuple[str, str, bool]:
        """One step of the state machine: (thinking, content, keep going)."""
        state = self._state
        if state == _LOOKING_FOR_OPENING:
            trimmed = go_lstrip(self._acc)
            if trimmed.startswith(self.opening_tag):
                after = go_lstrip(trimmed[len(self.opening_tag):])
                self._acc = after
                self._state = _THINKING if after else _STARTED_EATING_WHITESPACE
                return "", "", True
            if self.opening_tag.startswith(trimmed):
                return "", "", False  # whitespace or a partial opening tag: wait for more
            # Text before any opening tag: no thinking; the content keeps its whitespace.
            self._state = _DONE
            acc, self._acc = self._acc, ""
            return "", acc, False
        if state == _STARTED_EATING_WHITESPACE:
            trimmed = go_lstrip(self._acc)
            self._acc = ""
            if not trimmed:
                return "", "", False
            self._state = _THINKING
            self._acc = trimmed
            return "", "", True
        if state == _THINKING:
            acc = self._acc
            i = acc.find(self.closing_tag)
            if i >= 0:
                thinking = acc[:i]
                remaining = go_lstrip(acc[i + len(self.closing_tag):])
                self._acc = ""
                self._state = _DONE if remaining else _DONE_EATING_WHITESPACE
                return thinking, remaining, False
            held = _overlap(acc, self.closing_tag)
            self._acc = acc[len(acc) - held:] if held else ""
            return acc[:len(acc) - held], "", False
        if state == _DONE_EATING_WHITESPACE:
            trimmed = go_lstrip(self._acc)
            self._acc = ""
            if trimmed:
                self._state = _DONE
            return "", trimmed, False
        acc, self._acc = self._acc, ""
        return "", acc, False


def _overlap(text: str, delim: str) -> int:
    """Length of the longest suffix of `text` that is a proper-or-whole prefix of `delim`."""
    for n in range(min(len(delim), len(text)), 0, -1):
        if text.endswith(delim[:n]):
            return n
    return 0

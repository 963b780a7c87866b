"""What a model's Go template tells about the model, worked out once per template.

- `variables`: the field and variable names it mentions, lowercased (Ollama's Template.Vars):
  `.Messages` decides between the chat and the per-turn rendering, `.Tools` and `.Suffix` give
  the `tools` and `insert` capabilities.
- `thinking_tags` (Ollama's thinking.InferTags): find `.Thinking` inside a `{{range}}` whose
  pipeline uses `.Messages`, go up to the nearest list of nodes and take its first and last
  text nodes (trimmed). The model supports thinking exactly when both are found.
- `tool_call_tag` (Ollama's tools.parseTag): the first non-blank text inside the first
  `{{if ...ToolCalls}}` block, cut before any `{` and trimmed; `{` when there is none.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Iterable

from gotpl.parse import nodes as n

from workers.template import parse

DEFAULT_THINKING_TAGS = ("<think>", "</think>")

# Go's unicode.IsSpace differs from str.isspace only on the C0 separators U+001C..U+001F.
_NOT_GO_SPACE = frozenset("\x1c\x1d\x1e\x1f")


def go_lstrip(text: str) -> str:
    """strings.TrimLeftFunc(text, unicode.IsSpace)."""
    i = 0
    while i < len(text) and text[i].isspace() and text[i] not in _NOT_GO_SPACE:
        i += 1
    return text[i:]


def go_strip(text: str) -> str:
    """strings.TrimSpace(text)."""
    text = go_lstrip(text)
    j = len(text)
    while j > 0 and text[j - 1].isspace() and text[j - 1] not in _NOT_GO_SPACE:
        j -= 1
    return text[:j]


@dataclass(frozen=True)
class TemplateInfo:
    variables: frozenset[str]
    thinking_tags: tuple[str, str]  # ("", "") when the template marks out no thinking
    tool_call_tag: str

    @property
    def thinking(self) -> bool:
        return all(self.thinking_tags)

    @property
    def tools(self) -> bool:
        return "tools" in self.variables

    @property
    def insert(self) -> bool:
        return "suffix" in self.variables

    @property
    def closing_tag(self) -> str:
        """What ends a thinking block (the default's where the template marks out none)."""
        return self.thinking_tags[1] if self.thinking else DEFAULT_THINKING_TAGS[1]

    def opens_thinking(self, prompt: str) -> bool:
        """Whether a prompt rendered from this template ends inside a thinking block (the
        template wrote the opening tag): the model's first words are then thinking."""
        opening = self.thinking_tags[0] if self.thinking else DEFAULT_THINKING_TAGS[0]
        return go_strip(prompt).endswith(opening)


_NONE = TemplateInfo(frozenset(), ("", ""), "{")


@lru_cache(maxsize=64)
def analyze(template: str | None) -> TemplateInfo:
    parsed = parse.tree(template) if template else None
    if parsed is None:
        return _NONE
    return TemplateInfo(_variables(parsed), _thinking_tags(parsed.root),
                        _tool_call_tag(parsed.root))


def _variables(parsed: n.ParsedTemplate) -> frozenset[str]:
    found: set[str] = set()
    for root in parse.roots(parsed):
        for node in parse.walk(root):
            if isinstance(node, n.FieldNode):
                found.update(f.lower() for f in node.fields)
            elif isinstance(node, n.VariableNode):
                found.update(f.lower() for f in (node.name, *node.fields))
    return frozenset(found)


def _uses_field(node: Any, field: str) -> bool:
    return any(isinstance(x, n.FieldNode) and x.fields and x.fields[0] == field
               for x in parse.walk(node))


def _thinking_tags(root: n.ListNode) -> tuple[str, str]:
    """A later match overrides an earlier one, tag by tag, as Ollama's visit does."""
    opening = closing = ""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(root, ())]
    while stack:
        node, ancestors = stack.pop()
        if isinstance(node, n.FieldNode) and node.fields and node.fields[0] == "Thinking":
            ranges = [a for a in ancestors if isinstance(a, n.RangeNode)]
            lists = [a for a in ancestors if isinstance(a, n.ListNode)]
            if ranges and lists and _uses_field(ranges[-1].pipeline, "Messages"):
                first, last = lists[-1].nodes[0], lists[-1].nodes[-1]
                if isinstance(first, n.TextNode):
                    opening = go_strip(first.text)
                if isinstance(last, n.TextNode):
                    closing = go_strip(last.text)
        below = (*ancestors, node)
        stack.extend((child, below) for child in reversed(parse.children(node)))
    return opening, closing


def _tool_call_tag(root: n.ListNode) -> str:
    block = _find_tool_calls_if(root.nodes)
    text = _first_text(block.body.nodes) if block is not None else None
    if text is None:
        return "{"
    return go_strip(text.replace("\r\n", "\n").split("{", 1)[0]) or "{"


def _bodies(node: Any) -> list[n.ListNode]:
    if isinstance(node, n.ListNode):
        return [node]
    if isinstance(node, (n.IfNode, n.RangeNode, n.WithNode)):
        return [b for b in (node.body, node.else_body) if b is not None]
    return []


def _find_tool_calls_if(nodes: Iterable[Any]) -> n.IfNode | None:
    """The first `{{if}}` whose pipeline names `.ToolCalls`, in document order."""
    stack = [iter(nodes)]
    while stack:
        node = next(stack[-1], None)
        if node is None:
            stack.pop()
            continue
        if isinstance(node, n.IfNode) and any(
                isinstance(arg, n.FieldNode) and "ToolCalls" in arg.fields
                for cmd in node.pipeline.commands for arg in cmd.arguments):
            return node
        stack.extend(iter(body.nodes) for body in reversed(_bodies(node)))
    return None


def _first_text(nodes: Iterable[Any]) -> str | None:
    """Depth-first first non-blank text, giving up at the first action or after the first
    if/range/with that holds none (text after the calls is not the tag)."""
    for node in nodes:
        if isinstance(node, n.TextNode):
            if go_strip(node.text):
                return node.text
        elif isinstance(node, n.ListNode):
            text = _first_text(node.nodes)
            if text is not None:
                return text
        elif isinstance(node, (n.IfNode, n.RangeNode, n.WithNode)):
            text = _first_text(node.body.nodes)
            if text is None and node.else_body is not None:
                text = _first_text(node.else_body.nodes)
            return text
        elif isinstance(node, n.ActionNode):
            return None
    return None

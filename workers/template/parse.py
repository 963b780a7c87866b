"""Parsing a Go template once, and the one walk over its tree.

Two parses of the same text: `tree` accepts any identifier as a function name, since only the
shape matters to the analysis (a template calling a function we do not define still has
thinking tags); `compile` in render.py checks the functions too, as Ollama's Parse does.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Iterator

from gotpl.parse import TokenKind, lex, parse_template
from gotpl.parse import nodes as n


@lru_cache(maxsize=64)
def tree(source: str) -> n.ParsedTemplate | None:
    """The parse tree of a Go template, or None if the text is not one (a Jinja template)."""
    try:
        identifiers = {t.value for t in lex(source) if t.kind is TokenKind.IDENTIFIER}
        return parse_template(source, functions=identifiers)
    except Exception:  # noqa: BLE001 - anything the parser raises means "not a Go template"
        return None


def children(node: Any) -> list[Any]:
    """The nodes Ollama's templateVisit descends into, in its order. `{{template}}` and
    `{{block}}` contribute only their pipeline (a block's body is among the definitions); a
    `(pipeline).Field` chain is a leaf, as Go's ChainNode is."""
    if isinstance(node, n.ListNode):
        return list(node.nodes)
    if isinstance(node, (n.IfNode, n.WithNode, n.RangeNode)):
        return [c for c in (node.pipeline, node.body, node.else_body) if c is not None]
    if isinstance(node, n.ActionNode):
        return [node.pipeline]
    if isinstance(node, (n.TemplateCallNode, n.BlockNode)):
        return [node.pipeline] if node.pipeline is not None else []
    if isinstance(node, n.PipeNode):
        return list(node.commands)
    if isinstance(node, n.CommandNode):
        return list(node.arguments)
    if isinstance(node, n.ParenthesizedNode) and not node.fields:
        return [node.pipeline]
    return []


def walk(node: Any) -> Iterator[Any]:
    """Every node under `node` (itself first), depth first, without recursion: a template's
    nesting is the client's choice."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(children(current)))


def roots(parsed: n.ParsedTemplate) -> list[n.ListNode]:
    """The main tree and every `{{define}}`d one."""
    return [parsed.root, *(d.body for d in parsed.definitions)]

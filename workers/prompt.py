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
Ollama's template types (godata.py builds these values), so `{{ .Function.Arguments }}`, `{{ .Tools }}` and `{{ . }}` inside
`range .Tools` print JSON exactly as Go's encoding/json writes it, and the functions `json`,
`currentDate`, `yesterdayDate` and `toTypeScriptType` exist beside Go's own (`slice`, `len`...).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Callable, Iterable, Mapping, Sequence

import gotpl
from gotpl.parse import nodes as gonodes
from gotpl.parse import parse_template
from jinja2.sandbox import ImmutableSandboxedEnvironment

from workers.godata import (FUNCTIONS, PRINT, json_string, template_message, template_tools,
                            think_values)
from workers.protocol import ChatMessage, PromptSpec

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
        data = data[:start] + f"{PRINT} (".encode() + data[start:end] + b")" + data[end:]
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
            return "{{" + (p if n.pipeline.declarations else f"{PRINT} ({p})") + "}}"
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
            call = "{{template " + json_string(n.name)
            return call + (" " + pipe(n.pipeline) if n.pipeline is not None else "") + "}}"
        raise TemplateError(f"template error: unexpected node {type(n).__name__}")

    def node_list(lst: gonodes.ListNode) -> str:
        return "".join(map(node, lst.nodes))

    definitions = "".join("{{define " + json_string(d.name) + "}}" + node_list(d.body) + "{{end}}"
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
    extra = think_values(think)
    try:
        if prompt and suffix:
            return compiled.template.render({"Prompt": prompt, "Suffix": suffix, "Response": "",
                                             **extra})
        system, merged = collate(messages)
        if "messages" in compiled.uses:
            return compiled.template.render({
                "System": system, "Messages": [template_message(m) for m in merged],
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

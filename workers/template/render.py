"""Rendering Ollama's Go templates (gotpl) and GGUF Jinja chat templates, under a budget.

Go templates see what Ollama gives them (template/template.go `Execute`):

- fill-in-the-middle (`prompt` and `suffix` both set): `.Prompt .Suffix .Response`;
- a template that mentions `.Messages`: `.System` (all system messages joined), `.Messages`
  (same-role runs merged, tool results kept apart; each with `.Role .Content .Thinking .Images
  .ToolCalls .ToolName .ToolCallID`), `.Tools` and `.Response` (empty);
- any other ("legacy") template is rendered once per turn with `.System .Prompt .Response`, and
  for the turn being generated only up to where it prints `.Response`.

All of them also get `.Think .ThinkLevel .IsThinkSet`; godata.py builds the values.

Templates are client input. A rendering is bounded three ways: gotpl's budget (iterations,
printed characters, template depth); the characters the functions make (`print`, `printf`,
`json`, ...) count against a second budget, so a value doubled in a variable cannot grow
unseen, and `printf` refuses widths that would allocate before anything is counted; Jinja's
`*`, `+` and `%` on strings and lists are checked before they run. The render process
(workers/render_process.py) adds a memory ceiling and a CPU-time limit around all of it.
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Callable, Mapping, Sequence

import gotpl
from gotpl.parse import nodes as gonodes
from gotpl.parse import parse_template
from gotpl.runtime.sync_vm import _builtin_functions
from jinja2.sandbox import ImmutableSandboxedEnvironment

from workers.protocol import ChatMessage
from workers.template import analysis, parse
from workers.template.godata import (FUNCTIONS, PRINT, json_string, template_message,
                                     template_tools, think_values)


class TemplateError(ValueError):
    pass


# A real chat history of 12,000 messages takes ~12,000 iterations; `{{range 1000000000}}` fails
# in about a second instead of spinning for minutes.
MAX_ITERATIONS = 1_000_000
MAX_OUTPUT_CHARS = 32 << 20  # printed: a prompt this long is far past any context
MAX_TEMPLATE_DEPTH = 100  # nested {{template}} calls
# Characters the template's functions may make in one rendering (values held in variables
# included): what a prompt needs many times over, and a bound on the memory a render takes.
MAX_VALUE_CHARS = 32 << 20
MAX_FORMAT_WIDTH = 1 << 16  # printf "%0100000000d" would allocate 100 MB in one C call

BUDGET = gotpl.ExecutionBudget(max_output_chars=MAX_OUTPUT_CHARS, max_iterations=MAX_ITERATIONS,
                               max_template_depth=MAX_TEMPLATE_DEPTH)


def check_go_template(source: str) -> None:
    """Raises TemplateError if the text is not a valid Go template (used by /api/create)."""
    _check_calls(_parse(source))


def _parse(source: str) -> gonodes.ParsedTemplate:
    try:
        return parse_template(source, functions=_FUNCTIONS)
    except gotpl.TemplateError as exc:
        raise TemplateError(f"template error: {exc}") from None


def _check_calls(parsed: gonodes.ParsedTemplate) -> None:
    if any(isinstance(node, gonodes.TemplateCallNode) and node.pipeline is None
           for root in parse.roots(parsed) for node in parse.walk(root)):
        raise TemplateError("template error: undefined template specified")  # as Ollama


# ---- the characters a rendering makes ------------------------------------------------------


class _Made:
    __slots__ = ("chars",)

    def __init__(self) -> None:
        self.chars = 0

    def charge(self, count: int) -> None:
        self.chars += count
        if self.chars > MAX_VALUE_CHARS:
            raise TemplateError(f"template values exceed {MAX_VALUE_CHARS} characters")


_MADE: ContextVar[_Made] = ContextVar("corral_template_made")


def _charged(function: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        result = function(*args)
        if isinstance(result, str):
            made = _MADE.get(None)
            if made is not None:
                made.charge(len(result))
        return result
    return call


# %[flags][arg index][width or *][.[arg index][precision or *]]
_DIRECTIVE = re.compile(r"%[-+# 0]*(?:\[\d+\])?(\*|\d+)?(?:\.(?:\[\d+\])?(\*|\d+)?)?")


def _check_format(format_string: Any, *args: Any) -> None:
    """Refuses a width or precision past MAX_FORMAT_WIDTH, written or taken from an argument."""
    if not isinstance(format_string, str):
        return
    for directive in _DIRECTIVE.finditer(format_string.replace("%%", "")):
        for size in directive.groups():
            if size == "*":
                if any(isinstance(a, int) and abs(a) > MAX_FORMAT_WIDTH for a in args):
                    raise TemplateError(f"printf width above {MAX_FORMAT_WIDTH}")
            elif size is not None and int(size) > MAX_FORMAT_WIDTH:
                raise TemplateError(f"printf width {size} above {MAX_FORMAT_WIDTH}")


def _bounded_functions() -> dict[str, Callable[..., Any]]:
    """Ollama's functions and Go's builtins that make strings, each charged for what it makes."""
    builtins = _builtin_functions("go")
    printf = builtins["printf"]

    def checked_printf(format_string: Any, *args: Any) -> Any:
        _check_format(format_string, *args)
        return printf(format_string, *args)

    making = {name: builtins[name] for name in ("print", "println", "html", "js", "urlquery")}
    return {**{name: _charged(f) for name, f in {**FUNCTIONS, **making}.items()},
            "printf": _charged(checked_printf)}


_FUNCTIONS = _bounded_functions()


# ---- compiling -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Compiled:
    template: gotpl.Template       # the whole template, `.Response` added if it had none
    uses: frozenset[str]           # identifiers it mentions, lowercased (Ollama's Vars)
    cut: gotpl.Template | None     # legacy templates: only up to where `.Response` is printed


def _new_template(source: str) -> gotpl.Template:
    return gotpl.Template(source, functions=_FUNCTIONS, budget=BUDGET)


@lru_cache(maxsize=64)
def _compile(source: str) -> _Compiled:
    uses = analysis.analyze(source).variables
    if "messages" not in uses and "response" not in uses:
        # Ollama appends the node to the parsed tree; appended as text, a trailing "{" of the
        # template's would run into it ("{{{"), so an action writes that brace instead.
        if source.endswith("{") and not source.endswith("{{"):
            source = source[:-1] + '{{ "{" }}'
        source += "{{ .Response }}"
    parsed = _parse(source)  # errors point into the text as written: only appended to
    _check_calls(parsed)
    try:
        template = _new_template(_wrap_printing(source, parsed))
        cut = None
        if "messages" not in uses:
            cut = _new_template(_serialize(parsed, _cut_after_response(parsed.root),
                                           source.encode()))
    except gotpl.TemplateError as exc:
        raise TemplateError(f"template error: {exc}") from None
    return _Compiled(template, uses, cut)


def _wrap_printing(source: str, parsed: gonodes.ParsedTemplate) -> str:
    """The source with every printing action `{{ P }}` turned into `{{ _corralPrint (P) }}`
    (node positions are UTF-8 byte offsets; everything else is kept byte for byte)."""
    data = source.encode()
    spans = {(node.pipeline.start, node.pipeline.end)
             for root in parse.roots(parsed) for node in parse.walk(root)
             if isinstance(node, gonodes.ActionNode) and not node.pipeline.declarations}
    for start, end in sorted(spans, reverse=True):
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
    made = _MADE.set(_Made())
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
    finally:
        _MADE.reset(made)


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


class _BoundedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's sandbox, with the operators that can make a huge value in one step checked
    first: `"a" * 10**9`, a list doubled in a loop, `"%0999999999d" % 1`."""

    intercepted_binops = frozenset({"*", "+", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        size = _binop_size(operator, left, right)
        if size > MAX_VALUE_CHARS:
            raise TemplateError(f"chat template value of {size} items is too large")
        return super().call_binop(context, operator, left, right)


def _binop_size(operator: str, left: Any, right: Any) -> int:
    """An upper bound on the length of what `left <operator> right` makes (0: not a sequence)."""
    sequences = (str, list, tuple)
    if operator == "*":
        for seq, times in ((left, right), (right, left)):
            if isinstance(seq, sequences) and isinstance(times, int):
                return len(seq) * max(times, 0)
    elif operator == "+" and isinstance(left, sequences) and isinstance(right, sequences):
        return len(left) + len(right)
    elif operator == "%" and isinstance(left, str):
        widths = [int(w) for d in _DIRECTIVE.finditer(left) for w in d.groups() if w and w != "*"]
        return len(left) + sum(widths)
    return 0


@lru_cache(maxsize=16)
def _jinja_template(source: str) -> Any:
    env = _BoundedSandbox(trim_blocks=True, lstrip_blocks=True)
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
    except (TemplateError, MemoryError, RecursionError):
        raise
    except Exception as exc:  # noqa: BLE001 - any template failure is the template's fault
        raise TemplateError(f"chat template error: {exc}") from None
    # The tokenizer adds BOS itself; a template that writes it too would double it.
    return text[len(bos):] if bos and text.startswith(bos) else text


DEFAULT_TEMPLATE = "{{ .Prompt }}"  # Ollama's template.DefaultTemplate, for a model without one


def render_prompt(template: str, messages: Sequence[ChatMessage], *, chat_template: str = "",
                  bos: str = "", eos: str = "", tools: Sequence[Mapping[str, Any]] | None = None,
                  think: bool | str | None = None, suffix: str = "") -> str:
    """The prompt for `messages`: the model's Go template (fill-in-the-middle with a suffix),
    else the GGUF's Jinja chat template, else the bare prompt (Ollama's default)."""
    if template and suffix:
        return render_go(template, [], prompt=messages[-1]["content"], suffix=suffix, think=think)
    if template:
        return render_go(template, messages, tools=tools, think=think)
    if chat_template:
        return render_jinja(chat_template, messages, bos, eos, tools=tools)
    return render_go(DEFAULT_TEMPLATE, messages)

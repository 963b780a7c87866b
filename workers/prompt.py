"""Prompt rendering and truncation, done in the worker beside the tokenizer.

Templates are either Ollama Go templates (rendered with `gotpl`) or, when a model has none, the
GGUF's own Jinja chat template (rendered in jinja2's sandbox). A prompt that is too long for the
context is shortened the way Ollama does it: drop the oldest messages (system messages stay);
if the last message alone is still too long, the engine cuts tokens (see context.py).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any, Callable, Sequence

import gotpl
from jinja2.sandbox import ImmutableSandboxedEnvironment

from workers.protocol import ChatMessage, PromptSpec

Tokenize = Callable[[str, bool], list[int]]  # (text, add_bos) -> token ids

# Marks where `.Response` is printed, so a legacy template's output can be cut there, as Ollama
# cuts the template tree after the Response field for the turn being generated.
_RESPONSE_MARK = "\x00corral-response\x00"


class TemplateError(ValueError):
    pass


def check_go_template(source: str) -> None:
    """Raises TemplateError if the text is not a valid Go template (used by /api/create)."""
    _go_template(source)


# Templates come from requests and /api/create: each rendering gets a budget, so that a template
# like `{{range 1000000000}}` fails in about a second instead of spinning for minutes. A real chat
# history of 12,000 messages takes ~12,000 iterations; the time limit is the worker's (render.py).
BUDGET = gotpl.ExecutionBudget(max_output_chars=32 << 20, max_iterations=1_000_000,
                               max_template_depth=100)


@lru_cache(maxsize=64)
def _go_template(source: str) -> gotpl.Template:
    try:
        return gotpl.Template(source, budget=BUDGET)
    except gotpl.TemplateError as exc:
        raise TemplateError(f"template error: {exc}") from None


@lru_cache(maxsize=16)
def _jinja_template(source: str) -> Any:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise
    return env.from_string(source)


def _raise(message: str) -> None:
    raise TemplateError(message)


def collate(messages: Sequence[ChatMessage]) -> tuple[str, list[ChatMessage]]:
    """System text (all system messages joined) and the messages with same-role runs merged."""
    system: list[str] = []
    merged: list[ChatMessage] = []
    for msg in messages:
        if msg["role"] == "system":
            system.append(msg["content"])
        if merged and merged[-1]["role"] == msg["role"]:
            merged[-1] = {"role": msg["role"], "content": merged[-1]["content"] + "\n\n" + msg["content"]}
        else:
            merged.append({"role": msg["role"], "content": msg["content"]})
    return "\n\n".join(system), merged


def render_go(source: str, messages: Sequence[ChatMessage]) -> str:
    template = _go_template(source)
    system, merged = collate(messages)
    try:
        if re.search(r"\.Messages\b", source):
            return template.render({
                "System": system,
                "Messages": [{"Role": m["role"], "Content": m["content"]} for m in merged],
                "Tools": None, "Response": "", "Prompt": "",
            })
        return _render_legacy(template, merged)
    except gotpl.TemplateError as exc:
        raise TemplateError(f"template error: {exc}") from None


def _render_legacy(template: gotpl.Template, messages: list[ChatMessage]) -> str:
    """Templates written against .System/.Prompt/.Response: one rendering per turn."""
    out: list[str] = []
    turn = {"System": "", "Prompt": "", "Response": ""}

    def execute() -> None:
        out.append(template.render(turn))
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
    turn["Response"] += _RESPONSE_MARK
    last = template.render(turn)
    out.append(last.split(_RESPONSE_MARK, 1)[0])
    return "".join(out)


def render_jinja(source: str, messages: Sequence[ChatMessage], bos: str, eos: str) -> str:
    try:
        text = _jinja_template(source).render(
            messages=list(messages), add_generation_prompt=True, bos_token=bos, eos_token=eos)
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

"""What a request needs before it can join the batch, built on a side thread: its prompt
tokens (its messages rendered by a render process, tokenized, a chat history cut to what fits
the context as Ollama cuts it: the oldest messages go, system messages stay; if the last
message alone is still too long, the batcher cuts tokens, see context.py), whether the prompt
ended inside a thinking block, and its structured-output grammar (llama.cpp's grammar parser
takes a while on a large schema: not on the engine's thread).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

from workers.grammar import Grammar, grammar_text
from workers.protocol import ChatMessage, OutputFormat, PromptSpec, Render
from workers.template.analysis import analyze

if TYPE_CHECKING:
    from workers.llm import LoadedModel
    from workers.render_pool import RenderPool

Tokenize = Callable[[str, bool], list[int]]  # (text, add_bos) -> token ids


@dataclass
class Built:
    tokens: list[int]
    thinking: bool  # the prompt ended inside a thinking block
    grammar: Grammar | None


def preparation(job_id: int, spec: PromptSpec, output_format: OutputFormat, format_prefix: str,
                model: LoadedModel, renderers: RenderPool) -> Callable[[], Built]:
    """The work a side thread does for a generation request."""

    def render(messages: Sequence[ChatMessage]) -> str:
        return renderers.render(job_id, Render(
            spec["template"], list(messages), model.chat_template, model.bos_text,
            model.eos_text, spec.get("tools"), spec.get("think"), spec.get("suffix", "")))

    def work() -> Built:
        tokens, text = build_tokens(spec, render, model.tokenize, model.num_ctx)
        thinking = bool(spec.get("think")) and analyze(spec["template"]).opens_thinking(text)
        grammar = None if output_format is None else Grammar(
            model.vocab, grammar_text(output_format, format_prefix), model.n_vocab)
        return Built(tokens, thinking, grammar)

    return work


def build_tokens(spec: PromptSpec, render: Callable[[Sequence[ChatMessage]], str],
                 tokenize: Tokenize, n_ctx: int) -> tuple[list[int], str]:
    """Prompt token ids and the text rendered last ("" for a raw prompt); a chat history is cut
    to whole messages that fit in `n_ctx` (the engine truncates what is still too long,
    keeping room to generate)."""
    context = list(spec["context"])
    if spec["raw"] is not None:
        return context + tokenize(spec["raw"], not context), ""
    messages = spec["messages"]
    if not spec.get("truncate", True):  # the whole history, or the request fails (batcher)
        text = render(messages)
        return context + tokenize(text, not context), text
    start = _first_message_that_fits(messages, render, tokenize, n_ctx - len(context))
    kept = [m for m in messages[:start] if m["role"] == "system"] + list(messages[start:])
    text = render(kept)
    return context + tokenize(text, not context), text


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

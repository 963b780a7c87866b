"""A request's prompt tokens: its messages rendered (by a render process) and tokenized next
to the tokenizer, a chat history cut to what fits the context, as Ollama cuts it: drop the
oldest messages (system messages stay); if the last message alone is still too long, the
engine cuts tokens (see context.py).
"""

from __future__ import annotations

from typing import Callable, Sequence

from workers.protocol import ChatMessage, PromptSpec

Tokenize = Callable[[str, bool], list[int]]  # (text, add_bos) -> token ids


def build_tokens(spec: PromptSpec, render: Callable[[Sequence[ChatMessage]], str],
                 tokenize: Tokenize, n_ctx: int) -> tuple[list[int], str]:
    """Prompt token ids and the text rendered last ("" for a raw prompt); a chat history is cut
    to whole messages that fit in `n_ctx` (the engine truncates what is still too long,
    keeping room to generate)."""
    context = list(spec["context"])
    if spec["raw"] is not None:
        return context + tokenize(spec["raw"], not context), ""
    messages = spec["messages"]
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

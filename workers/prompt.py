"""What a request needs before it can join the batch, built on a side thread: its prompt
tokens (its messages rendered by a render process, tokenized, a chat history cut to what fits
the context as Ollama cuts it: the oldest messages go, system messages stay; if the last
message alone is still too long, the batcher cuts tokens, see context.py), whether the prompt
ended inside a thinking block, and its structured-output grammar (llama.cpp's grammar parser
takes a while on a large schema: not on the engine's thread). A message's images become markers
in its text, where Ollama puts them (in place of "[img]", else before the text), and the
projector encodes them (workers/vision.py).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

from workers.grammar import Grammar, grammar_text
from workers.protocol import ChatMessage, OutputFormat, PromptSpec, Render
from workers.template.analysis import analyze

if TYPE_CHECKING:
    from workers.llm import LoadedModel
    from workers.render_pool import RenderPool
    from workers.vision import EncodedImage

Tokenize = Callable[[str, bool], list[int]]  # (text, add_bos) -> token ids
# What an image of a chat history counts for when the history is cut to fit, as Ollama counts a
# clip image (server/prompt.go): its real count is known only once the projector cut it up.
IMAGE_POSITIONS = 768


@dataclass
class Built:
    tokens: list[int]
    thinking: bool  # the prompt ended inside a thinking block
    grammar: Grammar | None
    images: dict[int, EncodedImage] = field(default_factory=dict)  # by first position

    def free(self) -> None:
        """What llama.cpp holds for it, when no sequence takes it (cancelled meanwhile)."""
        if self.grammar is not None:
            self.grammar.free()
        for image in self.images.values():
            image.free()


def preparation(job_id: int, spec: PromptSpec, output_format: OutputFormat, format_prefix: str,
                model: LoadedModel, renderers: RenderPool) -> Callable[[], Built]:
    """The work a side thread does for a generation request."""

    def render(messages: Sequence[ChatMessage]) -> str:
        text_only = [{k: v for k, v in m.items() if k != "images"} for m in messages]
        return renderers.render(job_id, Render(
            spec["template"], text_only, model.chat_template,  # type: ignore[arg-type]
            model.bos_text, model.eos_text, spec.get("tools"), spec.get("think"),
            spec.get("suffix", "")))

    def work() -> Built:
        if not any(m.get("images") for m in spec["messages"]):
            tokens, text = build_tokens(spec, render, model.tokenize, model.num_ctx)
            images: dict[int, EncodedImage] = {}
        else:
            tokens, text, images = _image_prompt(spec, render, model)
        try:
            info = analyze(spec["template"])
            thinking = bool(spec.get("think")) and info.opens_thinking(text)
            # A prompt that ends inside the thinking block: the format holds what follows it.
            grammar = None if output_format is None else Grammar(
                model.vocab, grammar_text(output_format, format_prefix), model.n_vocab,
                after=info.closing_tag if thinking else "")
        except BaseException:
            for image in images.values():
                image.free()
            raise
        return Built(tokens, thinking, grammar, images)

    return work


def _image_prompt(spec: PromptSpec, render: Callable[[Sequence[ChatMessage]], str],
                  model: LoadedModel) -> tuple[list[int], str, dict[int, EncodedImage]]:
    """Tokens (a run of placeholders for each image), the rendered text, and the encoded
    images by the position of their first placeholder."""
    if model.projector is None:
        raise ValueError("this model does not support images")
    marked = {**spec, "messages": with_markers(spec["messages"], model.projector.marker)}
    kept = kept_messages(marked, render, model.tokenize, model.num_ctx,  # type: ignore[arg-type]
                         IMAGE_POSITIONS)
    text = render(kept)
    context = list(spec["context"])
    images = [base64.b64decode(i) for m in kept for i in m.get("images", [])]
    prompt = model.projector.prompt(text, images, add_special=not context,
                                    room=model.num_ctx - len(context))
    return (context + prompt.tokens, text,
            {len(context) + start: image for start, image in prompt.images.items()})


def with_markers(messages: Sequence[ChatMessage], marker: str) -> list[ChatMessage]:
    """Each image as a marker in its message's text, as Ollama tags them (server/prompt.go):
    in place of an "[img]" the text holds, else in front of the text."""
    marked: list[ChatMessage] = []
    for message in messages:
        content, prefix = message["content"], ""
        for _ in message.get("images", []):
            if "[img]" in content:
                content = content.replace("[img]", marker, 1)
            else:
                prefix += marker
        marked.append({**message, "content": prefix + content})
    return marked


def build_tokens(spec: PromptSpec, render: Callable[[Sequence[ChatMessage]], str],
                 tokenize: Tokenize, n_ctx: int) -> tuple[list[int], str]:
    """Prompt token ids and the text rendered last ("" for a raw prompt); a chat history is cut
    to whole messages that fit in `n_ctx` (the engine truncates what is still too long,
    keeping room to generate)."""
    context = list(spec["context"])
    if spec["raw"] is not None:
        return context + tokenize(spec["raw"], not context), ""
    text = render(kept_messages(spec, render, tokenize, n_ctx))
    return context + tokenize(text, not context), text


def kept_messages(spec: PromptSpec, render: Callable[[Sequence[ChatMessage]], str],
                  tokenize: Tokenize, n_ctx: int, image_positions: int = 0) -> list[ChatMessage]:
    """The messages the prompt holds: the whole history without `truncate` (the request fails
    if it is too long, in the batcher), else the newest that fit and the system ones, each
    image counted as `image_positions` besides its text."""
    messages = spec["messages"]
    if not spec.get("truncate", True):
        return list(messages)
    start = _first_message_that_fits(messages, render, tokenize, n_ctx - len(spec["context"]),
                                     image_positions)
    return [m for m in messages[:start] if m["role"] == "system"] + list(messages[start:])


def _first_message_that_fits(messages: Sequence[ChatMessage],
                             render: Callable[[Sequence[ChatMessage]], str],
                             tokenize: Tokenize, budget: int, image_positions: int) -> int:
    """Index of the oldest message from which the history fits (system messages before it are
    kept). Fitting only gets easier as the start moves on, so the search gallops back from the
    newest message (1, 2, 4, ... messages) and then bisects: it renders only histories about
    the size of what fits, O(log n) times, never the whole of a 12,000-message history."""
    n = len(messages)

    def fits(start: int) -> bool:
        system = [m for m in messages[:start] if m["role"] == "system"]
        images = sum(len(m.get("images") or ()) for m in messages[start:])
        return len(tokenize(render(system + list(messages[start:])), True)) \
            + images * image_positions <= budget

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

"""Prompt tokens: a chat history cut, as Ollama cuts it, to whole messages that fit."""

from __future__ import annotations

from workers.prompt import IMAGE_POSITIONS, build_tokens, kept_messages


def words(text: str, add_bos: bool) -> list[int]:
    """A stand-in tokenizer: one token per word, plus BOS."""
    return ([0] if add_bos else []) + [len(w) for w in text.split()]


def msg(role: str, content: str) -> dict:
    return {"role": role, "content": content}


def test_prompt_that_fits_is_rendered_whole() -> None:
    spec = {"raw": None, "messages": [msg("user", "a b c")], "template": "", "context": []}
    assert build_tokens(spec, lambda ms: " ".join(m["content"] for m in ms), words, 100) == ([0, 1, 1, 1], "a b c")


def test_oldest_messages_are_dropped_but_system_is_kept() -> None:
    history = [msg("system", "SYS"), msg("user", "old " * 20), msg("assistant", "old " * 20),
               msg("user", "new question")]
    rendered: list[list[str]] = []

    def render(ms):  # type: ignore[no-untyped-def]
        rendered.append([m["content"] for m in ms])
        return " ".join(m["content"] for m in ms)

    spec = {"raw": None, "messages": history, "template": "", "context": []}
    tokens, _ = build_tokens(spec, render, words, 20)
    assert rendered[-1] == ["SYS", "new question"]
    assert len(tokens) == 4


def test_a_long_history_is_cut_with_logarithmically_many_renderings() -> None:
    history = [msg("user" if i % 2 else "assistant", "word " * 5) for i in range(12_000)]
    renders = 0

    def render(ms):  # type: ignore[no-untyped-def]
        nonlocal renders
        renders += 1
        return " ".join(m["content"] for m in ms)

    spec = {"raw": None, "messages": history, "template": "", "context": []}
    tokens, _ = build_tokens(spec, render, words, 2048)
    assert 2048 - 5 < len(tokens) <= 2048  # as many whole messages as fit
    assert renders <= 20


def test_raw_prompt_with_context_appends_without_a_second_bos() -> None:
    spec = {"raw": "x y", "messages": [], "template": "", "context": [0, 5, 5]}
    assert build_tokens(spec, lambda ms: "", words, 100) == ([0, 5, 5, 1, 1], "")


def test_an_image_counts_as_ollamas_768_positions_when_a_history_is_cut() -> None:
    # Its text is one marker word; without its positions the old message would seem to fit.
    history = [{**msg("user", "IMG look"), "images": ["aGk="]}, msg("assistant", "a cat"),
               msg("user", "and now?")]
    spec = {"raw": None, "messages": history, "template": "", "context": []}
    render = lambda ms: " ".join(m["content"] for m in ms)  # noqa: E731
    assert kept_messages(spec, render, words, 500) == history
    assert kept_messages(spec, render, words, 500, IMAGE_POSITIONS) == history[1:]
    assert kept_messages(spec, render, words, 800, IMAGE_POSITIONS) == history

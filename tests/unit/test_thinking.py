"""Thinking traces split off the stream as Ollama does."""

from __future__ import annotations

import pytest

from server.thinking import ThinkingParser
from store.templates import template


GEMMA3 = template("gemma3-instruct")


def run(parser: ThinkingParser, pieces: list[str]) -> tuple[str, str]:
    thinking, content = [], []
    for piece in pieces:
        t, c = parser.feed(piece)
        thinking.append(t)
        content.append(c)
    t, c = parser.finish()
    return "".join(thinking) + t, "".join(content) + c


def test_from_template_falls_back_to_think_tags() -> None:
    parser = ThinkingParser.from_template(GEMMA3)
    assert (parser.opening_tag, parser.closing_tag) == ("<think>", "</think>")


def test_empty_tags_are_refused() -> None:
    with pytest.raises(ValueError):
        ThinkingParser("", "</think>")


def test_thinking_and_content_are_split_and_whitespace_after_tags_dropped() -> None:
    parser = ThinkingParser()
    assert parser.feed("  <think>\n internal </think>\n\n world") == ("internal ", "world")


def test_text_without_an_opening_tag_is_content_untouched() -> None:
    parser = ThinkingParser()
    assert parser.feed("  abc") == ("", "  abc")
    assert parser.feed("def") == ("", "def")


def test_text_before_the_opening_tag_means_no_thinking() -> None:
    parser = ThinkingParser()
    assert parser.feed("  abc <think>def</think> ghi") == ("", "  abc <think>def</think> ghi")


def test_only_the_first_block_is_thinking() -> None:
    assert ThinkingParser().feed("<think>a</think><think>b</think>c") == ("a", "<think>b</think>c")


def test_opening_tag_split_across_chunks_is_held_until_complete() -> None:
    parser = ThinkingParser()
    assert parser.feed("  <th") == ("", "")
    assert parser.feed("in") == ("", "")
    assert parser.feed("k>a") == ("a", "")


def test_closing_tag_split_across_chunks_is_held_until_complete() -> None:
    parser = ThinkingParser()
    assert parser.feed("<think>abc</th") == ("abc", "")
    assert parser.feed("ink>def") == ("", "def")


def test_text_that_only_looked_like_the_closing_tag_is_released_as_thinking() -> None:
    parser = ThinkingParser()
    assert parser.feed("<think>abc</th") == ("abc", "")
    assert parser.feed("ing>def") == ("</thing>def", "")


def test_whitespace_only_tokens_around_the_tags_are_dropped() -> None:
    parser = ThinkingParser()
    steps = [parser.feed(t) for t in ["<think>", "\n", "</think>", "\n\n", "Hi", " there"]]
    assert steps == [("", ""), ("", ""), ("", ""), ("", ""), ("", "Hi"), ("", " there")]


def test_whitespace_inside_content_after_thinking_is_kept() -> None:
    parser = ThinkingParser()
    assert parser.feed("<think>abc</think>\n\ndef ") == ("abc", "def ")
    assert parser.feed(" ghi") == ("", " ghi")


def test_every_chunk_boundary_gives_the_same_split() -> None:
    text = "\n<think> plan: a<b </thinking> c</think>\n answer {x} </think>"
    want = ("plan: a<b </thinking> c", "answer {x} </think>")
    assert run(ThinkingParser(), [text]) == want
    for i in range(len(text) + 1):
        assert run(ThinkingParser(), [text[:i], text[i:]]) == want, i
        for j in range(i, len(text) + 1):
            assert run(ThinkingParser(), [text[:i], text[i:j], text[j:]]) == want, (i, j)
    assert run(ThinkingParser(), list(text)) == want


def test_a_prompt_that_opened_the_thinking_block_starts_in_thinking() -> None:
    parser = ThinkingParser()
    parser.opened()
    assert parser.feed("reasoning</think>answer") == ("reasoning", "answer")


def test_template_tags_are_used_when_inferred() -> None:
    template = "{{ range .Messages }}{{ if .Thinking }}<reason>{{ .Thinking }}</reason>{{ end }}{{ end }}"
    parser = ThinkingParser.from_template(template)
    assert parser.feed("<reason>r</reason>c") == ("r", "c")


def test_finish_releases_a_partial_closing_tag_as_thinking() -> None:
    parser = ThinkingParser()
    assert parser.feed("<think>abc</thi") == ("abc", "")
    assert parser.finish() == ("</thi", "")


def test_finish_releases_a_partial_opening_tag_as_content() -> None:
    parser = ThinkingParser()
    assert parser.feed(" <thi") == ("", "")
    assert parser.finish() == ("", " <thi")


def test_finish_drops_output_that_was_only_whitespace() -> None:
    parser = ThinkingParser()
    assert parser.feed(" \n ") == ("", "")
    assert parser.finish() == ("", "")


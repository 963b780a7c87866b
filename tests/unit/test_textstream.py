"""Streaming text: whole UTF-8 characters only, and stop strings that never leak."""

from __future__ import annotations

from workers.textstream import TextStream


def feed(stream: TextStream, pieces: list[bytes]) -> str:
    return "".join(stream.push(p) for p in pieces)


def test_character_split_across_tokens_is_held_until_complete() -> None:
    stream = TextStream([])
    euro = "€".encode()
    assert stream.push(b"price " + euro[:1]) == "price "
    assert stream.push(euro[1:2]) == ""
    assert stream.push(euro[2:]) == "€"


def test_stop_string_split_across_tokens_is_cut_with_everything_after() -> None:
    stream = TextStream(["<end>"])
    out = feed(stream, [b"Hello <e", b"n", b"d> trailing"])
    assert out == "Hello " and stream.stopped


def test_text_that_only_looked_like_a_stop_is_released() -> None:
    stream = TextStream(["<end>"])
    assert stream.push(b"a <e") == "a "
    assert stream.push(b"xit") == "<exit"
    assert not stream.stopped


def test_earliest_of_several_stops_wins() -> None:
    stream = TextStream(["STOP", "\n\n"])
    assert feed(stream, [b"one\n\ntwo STOP"]) == "one"


def test_flush_returns_held_text_when_generation_ends_otherwise() -> None:
    stream = TextStream(["<end>"])
    assert stream.push(b"tail <en") == "tail "
    assert stream.flush() == "<en"


def test_invalid_bytes_become_replacement_characters_not_errors() -> None:
    stream = TextStream([])
    assert stream.push(b"\xff") + stream.flush() == "\ufffd"

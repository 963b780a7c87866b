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


def test_a_stop_is_found_after_a_false_start_that_overlaps_it() -> None:
    stream = TextStream(["aab"])
    assert feed(stream, [b"x a", b"a", b"ab tail"]) == "x a" and stream.stopped


def test_a_stop_inside_another_stops_prefix_cuts_where_it_starts() -> None:
    stream = TextStream(["abcd", "bc"])
    assert feed(stream, [b"zab", b"c"]) == "za" and stream.stopped


def test_held_text_is_only_the_tail_that_can_still_become_a_stop() -> None:
    stream = TextStream(["x" * 500 + "!", "y" * 500 + "!"])
    out = feed(stream, [b"x" * 300, b"y" * 10])  # the x-run can no longer become a stop
    assert out == "x" * 300 and stream.flush() == "y" * 10


def test_many_long_stops_the_output_keeps_almost_matching_are_still_matched() -> None:
    stops = ["ab" * 250 + str(i) for i in range(63)] + ["END"]
    stream = TextStream(stops)
    out = feed(stream, [b"ab"] * 5000 + [b"END"])
    assert out == "ab" * 5000 and stream.stopped


def test_the_stop_that_matched_is_named() -> None:
    stream = TextStream(["END", "STOP"])
    feed(stream, [b"one S", b"TO", b"P two"])
    assert stream.matched == "STOP"

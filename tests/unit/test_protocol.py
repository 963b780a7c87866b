"""The pipe protocol: every message survives encode/decode unchanged."""

from __future__ import annotations

import pytest

from workers import protocol

OPTIONS = {"num_predict": 8, "num_keep": 4, "temperature": 0.0, "top_k": 40, "top_p": 0.9,
           "min_p": 0.0, "repeat_penalty": 1.1, "repeat_last_n": 64, "presence_penalty": 0.0,
           "frequency_penalty": 0.0, "seed": 7, "stop": ["\n\n"]}
PROMPT = {"raw": None, "messages": [{"role": "user", "content": "hé 👋"}], "template": "{{ .Prompt }}",
          "context": [1, 2]}

MESSAGES = [
    protocol.Load("m1", "/blobs/sha256-ab", 4096, 4, 0, ["/a.gguf"], 16384, True),
    protocol.Unload("m1"),
    protocol.Submit(3, "m1", PROMPT, OPTIONS, True),
    protocol.Cancel(3),
    protocol.Embed(4, "m1", ["a", "b"], False),
    protocol.Shutdown(),
    protocol.Ready(123, False),
    protocol.Loaded("m1", 1_500_000_000, 250_000_000, False),
    protocol.LoadFailed("m1", "out of memory"),
    protocol.Unloaded("m1"),
    protocol.Step("m1", [[3, "héllo", 2], [5, "", 1]], 2, 2, 31_000_000, 120, 16384),
    protocol.Done(3, "stop", 10, 1000, 5, 2000, [1, 2, 3]),
    protocol.Embedded(4, [[0.5, -0.25]], 6),
    protocol.Failed(3, "bad template", "bad_request"),
]


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: type(m).__name__)
def test_round_trip_preserves_type_and_fields(message) -> None:  # type: ignore[no-untyped-def]
    data = protocol.encode(message)
    assert isinstance(data, bytes)
    assert protocol.decode(data) == message


def test_unknown_tag_is_rejected() -> None:
    with pytest.raises(ValueError, match="unknown message type"):
        protocol.decode(b'["Exec", {"code": "rm -rf /"}]')


def test_failed_defaults_to_an_internal_error() -> None:
    assert protocol.decode(protocol.encode(protocol.Failed(1, "boom"))).kind == "internal"


def test_frames_are_reassembled_from_arbitrary_pieces() -> None:
    big = protocol.Embedded(9, [[0.125] * 5000], 3)  # larger than one pipe read
    step = protocol.Step("m", [[1, "a", 1]], 1, 1, 5, 1, 8)
    stream = protocol.frame(step) + protocol.frame(big)
    reader = protocol.FrameReader()
    received = []
    for i in range(0, len(stream), 777):
        received += reader.feed(stream[i:i + 777])
    assert received == [step, big]


def test_a_partial_frame_yields_nothing_yet() -> None:
    reader = protocol.FrameReader()
    data = protocol.frame(protocol.Cancel(5))
    assert reader.feed(data[:-1]) == []
    assert reader.feed(data[-1:]) == [protocol.Cancel(5)]

"""keep_alive durations: seconds, Go duration strings, negative = forever."""

from __future__ import annotations

import math

import pytest

from server.durations import parse_duration


@pytest.mark.parametrize("value,seconds", [
    (0, 0.0), (30, 30.0), (1.5, 1.5), ("5m", 300.0), ("1h30m", 5400.0), ("250ms", 0.25),
    ("0", 0.0), ("3600", 3600.0), ("1.5h", 5400.0),
])
def test_parses(value: object, seconds: float) -> None:
    assert parse_duration(value) == pytest.approx(seconds)


@pytest.mark.parametrize("value", [-1, "-1m", "-5"])
def test_negative_means_forever(value: object) -> None:
    assert parse_duration(value) == math.inf


@pytest.mark.parametrize("value", ["soon", "5 m", "m", "", True, None, [1]])
def test_rejects_garbage(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)

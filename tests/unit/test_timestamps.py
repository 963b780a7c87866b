"""`created_at` as Go's encoding/json writes a time.Time in UTC: RFC 3339 with up to nine
fraction digits, trailing zeros cut, none when the fraction is zero."""

from __future__ import annotations

import re
import time
from unittest import mock

import pytest

from server.timestamps import now_rfc3339


@pytest.mark.parametrize(("ns", "text"), [
    (1_700_000_000_123_456_789, "2023-11-14T22:13:20.123456789Z"),
    (1_700_000_000_120_000_000, "2023-11-14T22:13:20.12Z"),
    (1_700_000_000_000_000_100, "2023-11-14T22:13:20.0000001Z"),
    (1_700_000_000_000_000_000, "2023-11-14T22:13:20Z"),
    (1_700_000_010_500_000_000, "2023-11-14T22:13:30.5Z"),
])
def test_now_is_written_as_go_writes_a_utc_time(ns: int, text: str) -> None:
    with mock.patch.object(time, "time_ns", return_value=ns):
        assert now_rfc3339() == text


def test_the_seconds_follow_the_clock() -> None:
    first = now_rfc3339()
    with mock.patch.object(time, "time_ns", return_value=time.time_ns() + 3_600_000_000_000):
        later = now_rfc3339()
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?Z", later)
    assert later[:19] != first[:19]

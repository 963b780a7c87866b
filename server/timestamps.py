"""Times as Ollama's API writes them (`created_at`, `modified_at`, `expires_at`)."""

from __future__ import annotations

import time
from datetime import datetime, timezone


def rfc3339(when: datetime) -> str:
    """A UTC time as Ollama writes it (RFC 3339 with a Z)."""
    return when.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


_second: tuple[int, str] = (-1, "")  # the last second formatted, and its text


def now_rfc3339() -> str:
    """Now, as Go marshals `time.Now().UTC()` (RFC 3339 with nanoseconds, trailing zeros cut).
    Every streamed chunk carries one, so the seconds' text is made once a second."""
    global _second
    seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
    if seconds != _second[0]:
        _second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    if not nanos:
        return f"{_second[1]}Z"
    return f"{_second[1]}.{nanos:09d}".rstrip("0") + "Z"

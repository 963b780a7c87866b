"""Go-style durations as Ollama accepts them for `keep_alive` and `OLLAMA_KEEP_ALIVE`.

A duration is a number of seconds or a Go duration string ("5m", "1h30m", "250ms"). Negative
means "keep forever", which we return as `math.inf` seconds.
"""

from __future__ import annotations

import math
import re

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(value: object) -> float:
    """Seconds for a keep_alive value; raises ValueError with a readable reason."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")
    try:
        if isinstance(value, (int, float)):
            seconds = float(value)
        elif isinstance(value, str):
            seconds = _parse_string(value.strip())
        else:
            raise ValueError(f"invalid duration {value!r}")
    except OverflowError:  # more seconds than a float holds: Go's Duration overflows too
        raise ValueError(f"invalid duration {_shown(value)}: out of range") from None
    if math.isnan(seconds):
        raise ValueError(f"invalid duration {value!r}")
    return math.inf if seconds < 0 else seconds


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _parse_string(text: str) -> float:
    try:
        return float(int(text))  # a bare integer string is seconds, as OLLAMA_KEEP_ALIVE allows
    except ValueError:
        pass
    sign = -1.0 if text.startswith("-") else 1.0
    body = text.lstrip("+-")
    if body == "0":
        return 0.0
    pos, total = 0, 0.0
    for match in _PART.finditer(body):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not body or pos != len(body):
        raise ValueError(f"time: invalid duration {_shown(text)}")
    if math.isinf(total):
        raise OverflowError
    return sign * total

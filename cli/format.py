"""Text the CLI prints, as Ollama prints it: sizes, "4 minutes ago", Go durations, tables.

Ports of Ollama's `format` package (HumanBytes, HumanNumber, HumanTime), Go's
`time.Duration.String`, the progress bar's ETA, the PROCESSOR column of `ps`, the `--verbose`
timing block (`api.Metrics.Summary`) and the borderless tables `ollama ls`/`ps`/`show` draw with
tablewriter (left-aligned, four spaces between columns). Pure functions, no I/O.
"""

from __future__ import annotations

import math
from datetime import datetime, timezone
from decimal import Decimal
from typing import Any, Iterable, Mapping, Sequence

from rich.cells import cell_len

KB, MB, GB, TB = 1000, 1000**2, 1000**3, 1000**4
THOUSAND, MILLION, BILLION = 1000, 1000**2, 1000**3
TABLE_PADDING = "    "


def human_bytes(b: int | float) -> str:
    """Ollama's format.HumanBytes: decimal units, "292 MB", "1.5 GB", "512 B"."""
    b = int(b)
    if b >= TB:
        value, unit = b / TB, "TB"
    elif b >= GB:
        value, unit = b / GB, "GB"
    elif b >= MB:
        value, unit = b / MB, "MB"
    elif b >= KB:
        value, unit = b / KB, "KB"
    else:
        return f"{b} B"
    if value >= 10:
        return f"{int(value)} {unit}"
    if value != math.trunc(value):
        return f"{value:.1f} {unit}"
    return f"{int(value)} {unit}"


def human_number(n: int | float) -> str:
    """Ollama's format.HumanNumber: parameter counts, "268.10M", "1B", "32K"."""
    n = int(n)
    if n >= BILLION:
        value = n / BILLION
        return f"{value:.0f}B" if value == math.floor(value) else f"{value:.1f}B"
    if n >= MILLION:
        value = n / MILLION
        return f"{value:.0f}M" if value == math.floor(value) else f"{value:.2f}M"
    if n >= THOUSAND:
        return f"{n / THOUSAND:.0f}K"
    return str(n)


def human_duration(seconds: float) -> str:
    """Ollama's humanDuration: "Less than a second", "About a minute", "4 minutes", "3 days"."""
    whole = int(seconds)
    if whole < 1:
        return "Less than a second"
    if whole == 1:
        return "1 second"
    if whole < 60:
        return f"{whole} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = _go_round(seconds / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def _go_round(x: float) -> int:
    """Go's math.Round: half away from zero (Python's round() is half to even)."""
    return int(math.floor(abs(x) + 0.5)) * (1 if x >= 0 else -1)


def parse_time(text: str | None) -> datetime | None:
    """An RFC 3339 timestamp from the API (nanoseconds allowed); None for Go's zero time."""
    if not text:
        return None
    text = text.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    if "." in text:  # datetime takes at most 6 fraction digits; Go sends up to 9
        head, rest = text.split(".", 1)
        digits = len(rest) - len(rest.lstrip("0123456789"))
        text = f"{head}.{rest[:min(digits, 6)].ljust(6, '0')}{rest[digits:]}"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    if moment.year <= 1:  # Go's time.Time{} ("0001-01-01T00:00:00Z"): never set
        return None
    return moment


def human_time(moment: datetime | str | None, zero: str = "Never",
               now: datetime | None = None) -> str:
    """Ollama's format.HumanTime: "4 minutes ago", "3 minutes from now", "Forever", `zero`."""
    if isinstance(moment, str):
        moment = parse_time(moment)
    if moment is None:
        return zero
    now = now or datetime.now(timezone.utc)
    delta = (now - moment).total_seconds()
    if int(int(delta / 3600) / 24 / 365) < -20:  # Go's integer division truncates toward zero
        return "Forever"
    if delta < 0:
        return human_duration(-delta) + " from now"
    return human_duration(delta) + " ago"


def _frac(value: int, prec: int) -> str:
    """Go's fmtFrac + fmtInt: value / 10**prec with trailing zeros (and a bare '.') dropped."""
    whole, frac = divmod(value, 10**prec)
    digits = f"{frac:0{prec}d}".rstrip("0")
    return f"{whole}.{digits}" if digits else str(whole)


def go_duration(nanoseconds: int | float) -> str:
    """Go's time.Duration.String(): "1.5s", "350.2ms", "2m3.04s", "1h0m0s", "0s"."""
    ns = int(nanoseconds)
    sign = "-" if ns < 0 else ""
    u = abs(ns)
    if u < 1_000_000_000:
        if u == 0:
            return "0s"
        if u < 1_000:
            return f"{sign}{u}ns"
        if u < 1_000_000:
            return f"{sign}{_frac(u, 3)}µs"
        return f"{sign}{_frac(u, 6)}ms"
    seconds = _frac(u % 60_000_000_000, 9)
    minutes = u // 60_000_000_000
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}s"
    if minutes:
        return f"{sign}{minutes}m{seconds}s"
    return f"{sign}{seconds}s"


def eta(seconds: float) -> str:
    """The progress bar's time left (Ollama's formatDuration): "59m59s", "1h5m", "99h+"."""
    if seconds >= 100 * 3600:
        return "99h+"
    if seconds >= 3600:
        return f"{int(seconds // 3600)}h{int(seconds // 60) % 60}m"
    return go_duration(_go_round(max(seconds, 0)) * 1_000_000_000)


def processor(size: int, size_vram: int) -> str:
    """The PROCESSOR column of `ps`: "100% CPU", "100% GPU", "48%/52% CPU/GPU"."""
    if size_vram == 0:
        return "100% CPU"
    if size_vram == size:
        return "100% GPU"
    if size_vram > size or size == 0:
        return "Unknown"
    cpu = _go_round((size - size_vram) / size * 100)
    return f"{cpu}%/{100 - cpu}% CPU/GPU"


def table(rows: Iterable[Sequence[str]], header: Sequence[str] | None = None) -> str:
    """Rows as tablewriter draws them for Ollama (no borders, left-aligned, four spaces between
    columns), trailing blanks trimmed; one line per row, each ending in a newline."""
    body = [list(map(str, row)) for row in rows]
    every = ([list(header)] if header else []) + body
    if not every:
        return ""
    ncols = max(len(row) for row in every)
    widths = [max((cell_len(row[i]) for row in every if i < len(row)), default=0)
              for i in range(ncols)]
    lines = []
    for row in every:
        cells = [cell + " " * (widths[i] - cell_len(cell)) for i, cell in enumerate(row)]
        lines.append(TABLE_PADDING.join(cells).rstrip() + "\n")
    return "".join(lines)


def metrics_summary(resp: Mapping[str, Any]) -> str:
    """The `--verbose` timing block, Ollama's api.Metrics.Summary, line for line."""
    lines = []
    total, load = resp.get("total_duration") or 0, resp.get("load_duration") or 0
    pcount, pdur = resp.get("prompt_eval_count") or 0, resp.get("prompt_eval_duration") or 0
    count, dur = resp.get("eval_count") or 0, resp.get("eval_duration") or 0
    if total > 0:
        lines.append(f"total duration:       {go_duration(total)}")
    if load > 0:
        lines.append(f"load duration:        {go_duration(load)}")
    if pcount > 0:
        lines.append(f"prompt eval count:    {pcount} token(s)")
    if pdur > 0:
        lines.append(f"prompt eval duration: {go_duration(pdur)}")
        lines.append(f"prompt eval rate:     {pcount / (pdur / 1e9):.2f} tokens/s")
    if count > 0:
        lines.append(f"eval count:           {count} token(s)")
    if dur > 0:
        lines.append(f"eval duration:        {go_duration(dur)}")
        lines.append(f"eval rate:            {count / (dur / 1e9):.2f} tokens/s")
    return "".join(line + "\n" for line in lines)


def go_value(value: Any) -> str:
    """A JSON value as Go's fmt prints what encoding/json decoded (%t, %g, %v): metadata rows."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return go_g(value)
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "[" + " ".join(go_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_value(v)}" for k, v in sorted(value.items())) + "]"
    if value is None:
        return "<nil>"
    return str(value)


def go_g(number: int | float) -> str:
    """Go's %g for a float64: the shortest digits that round-trip, exponent form when the
    decimal exponent is below -4 or at least 6 (1e+06, as fmt.Println(1e6) prints)."""
    x = float(number)
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    if math.isnan(x):
        return "NaN"
    if x == 0:
        return "-0" if math.copysign(1, x) < 0 else "0"
    sign, digits, exponent = Decimal(repr(x)).normalize().as_tuple()
    text = "".join(map(str, digits))
    exp = len(text) + int(exponent) - 1  # decimal exponent of the first digit
    prefix = "-" if sign else ""
    if exp < -4 or exp >= 6:
        mantissa = text[0] + ("." + text[1:] if len(text) > 1 else "")
        return f"{prefix}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if exp >= len(text) - 1:
        return prefix + text + "0" * (exp - len(text) + 1)
    if exp >= 0:
        return f"{prefix}{text[:exp + 1]}.{text[exp + 1:]}"
    return f"{prefix}0.{'0' * (-exp - 1)}{text}"


def metadata_value(value: Any) -> str:
    """A metadata row's value in `show --verbose`: long arrays cut to about ten characters."""
    if not isinstance(value, list):
        return go_value(value)
    shown, width = 0, 1
    for i, item in enumerate(value):
        item_width = cell_len(go_value(item)) + (2 if i > 0 else 0)
        if width + item_width > 10 and i > 0:
            break
        width += item_width
        shown += 1
    if shown < len(value):
        return go_value(value[:shown])[:-1] + f" ...+{len(value) - shown} more]"
    return go_value(value)

"""What the CLI draws on stderr while it waits: spinners, and status lines with per-layer bars.

`StatusDisplay` renders the status stream of create, pull and push as Ollama's progress package
does: each new status is a line with a spinner that stops when the next one arrives, and each
layer (an event with a digest, or a status carrying `total`/`completed`) gets a bar with its
percentage, size so far and total, speed and time left. On a terminal it is drawn live with rich;
elsewhere each status and each finished layer is printed once, so logs stay readable.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Mapping

from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, Progress, ProgressColumn, SpinnerColumn, Task
from rich.table import Column
from rich.spinner import Spinner as RichSpinner
from rich.text import Text

from cli.format import eta, human_bytes


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=False)


class _BarOnly(ProgressColumn):
    """Shows `inner` on layer lines only; status lines leave the column empty."""

    def __init__(self, inner: ProgressColumn, table_column: Column | None = None) -> None:
        super().__init__(table_column=table_column)
        self.inner = inner

    def render(self, task: Task) -> Any:
        return self.inner.render(task) if task.fields.get("bar") else Text("")


class _Label(ProgressColumn):
    """The status or layer name; a status line has Ollama's spinner right after its text until
    the next status replaces it."""

    def __init__(self) -> None:
        super().__init__(table_column=Column(no_wrap=True, overflow="ellipsis"))
        self.spinner = SpinnerColumn("dots", finished_text="")

    def render(self, task: Task) -> Text:
        text = Text(task.description)
        if not task.fields.get("bar") and not task.finished:
            text.append(" ")
            text.append_text(self.spinner.render(task))  # type: ignore[arg-type]
        return text


class _Percent(ProgressColumn):
    def render(self, task: Task) -> Text:
        return Text(f"{task.percentage:3.0f}%")


class _Sizes(ProgressColumn):
    """ "12 MB/292 MB" while running, the total once done, as Ollama's bar."""

    def render(self, task: Task) -> Text:
        total = human_bytes(task.total or 0)
        if task.finished:
            return Text(f"{total:>6}" + " " * 7)
        return Text(f"{human_bytes(task.completed):>6}/{total:>6}")


class _BySpeed(ProgressColumn):
    """A figure drawn from the task's speed (blank, at its width, until there is one)."""

    def __init__(self, width: int, text: Callable[[Task, float], str]) -> None:
        super().__init__()
        self._width, self._text = width, text

    def render(self, task: Task) -> Text:
        speed = task.speed
        if task.finished or not speed:
            return Text(" " * self._width)
        return Text(self._text(task, speed))


def _rate(task: Task, speed: float) -> str:
    return f"{human_bytes(speed):>6}/s"


def _time_left(task: Task, speed: float) -> str:
    return f"{eta(((task.total or 0) - task.completed) / speed):>6}"


class StatusDisplay:
    """Feed it each streamed status object (`update`); `close` leaves the final state drawn."""

    def __init__(self, console: Console | None = None, verb: str = "pulling") -> None:
        self.console = console or stderr_console()
        self.verb = verb  # names a layer bar whose event has no status ("pulling 3f2c…")
        self.live = self.console.is_terminal
        self._status: str | None = None
        self._status_task: Any = None
        self._bars: dict[str, Any] = {}
        self._done: set[str] = set()
        self._progress: Progress | None = None
        if self.live:
            self._progress = Progress(
                _Label(),
                _BarOnly(_Percent()),
                _BarOnly(BarColumn(bar_width=None), table_column=Column(ratio=1)),
                _BarOnly(_Sizes()),
                _BarOnly(_BySpeed(8, _rate)),
                _BarOnly(_BySpeed(6, _time_left)),
                console=self.console, transient=False, redirect_stdout=False,
                redirect_stderr=False, expand=True, speed_estimate_period=10.0)
            self._progress.start()

    def update(self, event: Mapping[str, Any]) -> None:
        status = str(event.get("status") or "")
        digest = str(event.get("digest") or "")
        total = event.get("total")
        completed = int(event.get("completed") or 0)
        if digest or total:
            key = digest or status
            if digest and completed == 0 and key not in self._bars:
                return  # the announcement before a download starts: no 0% bar (as Ollama)
            self._bar(key, self._bar_label(status, digest), int(total or 0), completed)
        elif status and status != self._status:
            self._new_status(status)

    def _bar_label(self, status: str, digest: str) -> str:
        """Ollama's labels: "pulling <12 hex>:" for a pull, else the status or "pushing <hex>..."."""
        short = digest.removeprefix("sha256:").strip()[:12]
        if digest and self.verb == "pulling":
            return f"pulling {short}:"
        return status or f"{self.verb} {short}..."

    def _bar(self, key: str, label: str, total: int, completed: int) -> None:
        completed = min(completed, total) if total else completed
        if self._progress is not None:
            if key not in self._bars:
                self._stop_status()
                self._bars[key] = self._progress.add_task(label, total=total or None,
                                                          completed=0, bar=True)
            self._progress.update(self._bars[key], completed=completed, total=total or None)
            return
        if key not in self._bars:
            self._bars[key] = None
            self.console.print(f"{label} {human_bytes(total)}" if total else label, markup=False,
                               soft_wrap=True)
        if total and completed >= total and key not in self._done:
            self._done.add(key)
            self.console.print(f"{label} 100% {human_bytes(total)}", markup=False, soft_wrap=True)

    def _new_status(self, status: str) -> None:
        self._status = status
        if self._progress is None:
            self.console.print(status, markup=False, soft_wrap=True)
            return
        self._stop_status()
        self._status_task = self._progress.add_task(status, total=None, bar=False)

    def _stop_status(self) -> None:
        if self._progress is not None and self._status_task is not None:
            self._progress.update(self._status_task, total=1, completed=1)
            self._status_task = None

    def close(self) -> None:
        if self._progress is not None:
            self._stop_status()
            self._progress.stop()
            self._progress = None

    def __enter__(self) -> "StatusDisplay":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class WaitSpinner:
    """Ollama's bare spinner while a model loads or before the first token: drawn on stderr
    only when stderr is a terminal, erased when stopped."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or stderr_console()
        self._live: Live | None = None

    def start(self) -> "WaitSpinner":
        if self.console.is_terminal and self._live is None:
            self._live = Live(RichSpinner("dots"), console=self.console, transient=True,
                              redirect_stdout=False, redirect_stderr=False,
                              refresh_per_second=10)
            self._live.start()
        return self

    def stop(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
            sys.stderr.flush()

    def __enter__(self) -> "WaitSpinner":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""Prompt rendering and tokenization on their own thread, under a time limit.

Templates come from clients. Rendering one (and tokenizing the result) must never hold up the
thread that steps the batch, and one that runs past `RENDER_TIMEOUT` is stopped: the watchdog
raises `RenderTimeout` inside the rendering thread (CPython's PyThreadState_SetAsyncExc, which
takes effect at the next Python instruction; gotpl is pure Python). The same stop serves a
client that disconnects mid-render. Results come back through `results()`, and a byte on the
wake-up pipe tells the worker's select loop that one is ready.
"""

from __future__ import annotations

import ctypes
import os
import queue
import threading
import time
from collections import deque
from typing import Any, Callable

RENDER_TIMEOUT = 10.0


class RenderTimeout(Exception):
    pass


class RenderStopped(RenderTimeout):
    """The job was cancelled while rendering."""


class PromptThread:
    def __init__(self, timeout: float = RENDER_TIMEOUT) -> None:
        self.timeout = timeout
        self._inbox: queue.SimpleQueue[tuple[int, Callable[[], Any]] | None] = queue.SimpleQueue()
        self._outbox: deque[tuple[int, Any]] = deque()
        self._lock = threading.Lock()
        self._current: tuple[int, float] | None = None  # (job id, started)
        self._stopping: set[int] = set()
        self._queued: set[int] = set()
        self.wake_fd, self._wake_w = os.pipe()
        os.set_blocking(self.wake_fd, False)
        self._thread = threading.Thread(target=self._run, name="corral-render", daemon=True)
        self._thread.start()

    # ---- worker thread side --------------------------------------------------------------

    def submit(self, job_id: int, work: Callable[[], Any]) -> None:
        self._queued.add(job_id)
        self._inbox.put((job_id, work))

    def cancel(self, job_id: int) -> None:
        """Drops a queued job, or stops it if it is rendering now; its result never arrives."""
        self._queued.discard(job_id)
        self._interrupt(job_id, RenderStopped)

    @property
    def pending(self) -> bool:
        return bool(self._queued)

    def drain_wakeups(self) -> None:
        """Empties the wake-up pipe (when select said it is readable, not on every step)."""
        try:
            os.read(self.wake_fd, 1 << 16)
        except BlockingIOError:
            pass

    def results(self) -> list[tuple[int, Any]]:
        """(job id, token list or the exception it raised) for each finished job."""
        done = []
        while self._outbox:
            job_id, outcome = self._outbox.popleft()
            if job_id in self._queued:
                self._queued.discard(job_id)
                done.append((job_id, outcome))
        return done

    def enforce_deadline(self) -> float | None:
        """Stops a rendering past its time; returns seconds until the current one's deadline."""
        with self._lock:
            current = self._current
        if current is None:
            return None
        left = current[1] + self.timeout - time.monotonic()
        if left <= 0:
            self._interrupt(current[0], RenderTimeout)
            return None
        return left

    def wait_until_idle(self, timeout: float) -> None:
        """Blocks while a job runs. A cancelled job stops at its next Python instruction, but
        not inside a C call such as llama_tokenize, which may still use a model: no model may
        be freed before that call returns. (Unloads are rare; the wait is a render at most.)"""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if self._current is None:
                    return
            time.sleep(0.005)

    def close(self) -> None:
        self._inbox.put(None)
        os.close(self._wake_w)
        os.close(self.wake_fd)

    def _interrupt(self, job_id: int, exc: type[BaseException]) -> None:
        with self._lock:  # the thread changes _current only under this lock
            if self._current is None or self._current[0] != job_id or job_id in self._stopping:
                return
            self._stopping.add(job_id)
            ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self._thread.ident),
                                                       ctypes.py_object(exc))

    # ---- rendering thread ----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._inbox.get()
            if item is None:
                return
            job_id, work = item
            if job_id not in self._queued:
                continue  # cancelled while it waited
            try:
                outcome = self._call(job_id, work)
            except RenderTimeout as exc:  # landed just after the work returned
                outcome = exc
            self._outbox.append((job_id, outcome))
            try:
                os.write(self._wake_w, b"x")
            except OSError:
                return  # closed: the worker is exiting

    def _call(self, job_id: int, work: Callable[[], Any]) -> Any:
        try:
            try:
                with self._lock:
                    self._current = (job_id, time.monotonic())
                return work()
            finally:
                with self._lock:
                    self._current = None
                    self._stopping.discard(job_id)
        except BaseException as exc:  # noqa: BLE001 - handed to the engine as this job's outcome
            return exc

"""The worker's render processes (workers/render_process.py), shared by its side threads (side_threads.py).

`render()` is called on a side thread and blocks (without the GIL) until the text comes
back. The pool grows, up to MAX_RENDERERS, when every process has stayed busy for GROW_AFTER:
the OS then shares the cores among the renderings, so a short prompt never waits long for slow
templates to finish, and each rendering is charged only its own CPU time. A render takes
~0.3 ms and a new process ~0.2 s of CPU to start, so a burst of requests is rendered by the
processes already up rather than by new ones competing with the decoding for the cores.
Beyond one, a process left idle for IDLE_EXIT seconds exits. A rendering is killed when its
request is cancelled, and at WALL_LIMIT (a render stuck where the CPU timer cannot reach, or
starved of CPU for that long); its process is replaced by the next one needed.
"""

from __future__ import annotations

import logging
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

from workers import protocol
from workers.protocol import Render, RenderFailed, Rendered
from workers.template.render import TemplateError

log = logging.getLogger("corral.worker")

MAX_RENDERERS = 16  # processes per worker: ~25 MB each, only while that many renders run
RENDER_CPU_SECONDS = 10.0  # CPU time one rendering may take
WALL_LIMIT = 60.0  # seconds a rendering may take in all, however little CPU it got
IDLE_EXIT = 30.0  # seconds a spare process stays for the next burst
GROW_AFTER = 0.05  # seconds a rendering waits for a busy process before starting a new one
_ROOT = Path(__file__).resolve().parent.parent  # what `-m workers.render_process` imports from


class RenderTimeout(Exception):
    pass


class RenderStopped(Exception):
    """The request was cancelled while its prompt was rendering."""


class RenderCrashed(Exception):
    pass


class _Unreachable(RenderCrashed):
    """The process was gone before it got the request."""


class _Process:
    def __init__(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(_ROOT), os.environ.get("PYTHONPATH", "")) if p)}
        self.popen = subprocess.Popen([sys.executable, "-m", "workers.render_process"],
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        assert self.popen.stdin is not None and self.popen.stdout is not None
        self._tx, self._rx = self.popen.stdin.fileno(), self.popen.stdout.fileno()
        self._reader = protocol.FrameReader()
        self.idle_since = time.monotonic()

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def call(self, req: Render, wall: float) -> Rendered | RenderFailed:
        """Sends one request and waits for its reply; RenderCrashed if the process is gone
        (killed), TimeoutError past `wall` seconds."""
        deadline = time.monotonic() + wall
        try:
            protocol.write_frame(self._tx, req)
        except OSError:
            raise _Unreachable from None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            if not select.select([self._rx], [], [], left)[0]:
                continue
            data = os.read(self._rx, 1 << 20)
            if not data:
                raise RenderCrashed
            replies = self._reader.feed(data)
            if replies:
                return replies[0]

    def kill(self) -> None:
        if self.alive:
            self.popen.kill()

    def close(self) -> None:
        self.kill()
        self.popen.wait()
        for pipe in (self.popen.stdin, self.popen.stdout):
            if pipe is not None:
                pipe.close()


class RenderPool:
    def __init__(self, cpu_seconds: float = RENDER_CPU_SECONDS, wall_seconds: float = WALL_LIMIT,
                 max_processes: int = MAX_RENDERERS) -> None:
        self.cpu_seconds = cpu_seconds
        self._wall = wall_seconds
        self._max = max_processes
        self._changed = threading.Condition()
        self._idle: list[_Process] = [_Process()]  # started now: its imports overlap the load
        self._count = 1  # processes alive or being started
        self._busy: dict[int, _Process] = {}  # job id -> the process rendering for it
        self._cancelled: set[int] = set()  # jobs cancelled while they render or wait
        self._closed = False

    def render(self, job_id: int, req: Render) -> str:
        """The rendered prompt. Raises TemplateError (the template's fault), RenderTimeout,
        RenderStopped (cancelled) or RenderCrashed."""
        req.cpu_seconds = self.cpu_seconds
        reply = self._call(job_id, req)
        if isinstance(reply, Rendered):
            return reply.text
        if reply.kind == "time":
            raise RenderTimeout(reply.message)
        raise TemplateError(reply.message)

    def _call(self, job_id: int, req: Render) -> Rendered | RenderFailed:
        for attempt in range(2):
            process = self._acquire(job_id)
            reply: Rendered | RenderFailed | None = None
            try:
                reply = process.call(req, self._wall)
            except TimeoutError:
                raise RenderTimeout(f"template rendering took longer than {self._wall:g}s") from None
            except _Unreachable:
                continue  # it died while idle: another process takes the request
            except RenderCrashed:
                if job_id in self._cancelled:
                    raise RenderStopped from None
                raise RenderCrashed("template rendering failed: the render process died") from None
            finally:
                # A process that failed us, or whose heap hit its ceiling, is not used again.
                reuse = reply is not None and not (isinstance(reply, RenderFailed)
                                                   and reply.kind == "memory")
                self._release(job_id, process, reuse)
            return reply
        raise RenderCrashed("template rendering failed: no render process would start")
    def cancel(self, job_id: int) -> None:
        """Stops the job's rendering now (its process is killed), or the next one it asks for."""
        with self._changed:
            self._cancelled.add(job_id)
            process = self._busy.get(job_id)
        if process is not None:
            process.kill()

    def forget(self, job_id: int) -> None:
        """The job is over: no later call of it will come."""
        with self._changed:
            self._cancelled.discard(job_id)

    def _acquire(self, job_id: int) -> _Process:
        with self._changed:
            grow_at = time.monotonic() + GROW_AFTER
            while True:
                if job_id in self._cancelled or self._closed:
                    raise RenderStopped
                self._reap_idle()
                if self._idle:
                    process = self._idle.pop()
                    break
                wait = grow_at - time.monotonic()
                if self._count < self._max and (wait <= 0 or not self._count):
                    self._count += 1
                    try:
                        process = _Process()
                    except OSError:
                        self._count -= 1
                        raise
                    break
                self._changed.wait(wait if self._count < self._max else None)
            self._busy[job_id] = process
        return process

    def _release(self, job_id: int, process: _Process, reuse: bool) -> None:
        with self._changed:
            self._busy.pop(job_id, None)
            reuse = reuse and process.alive and not self._closed
            if reuse:
                process.idle_since = time.monotonic()
                self._idle.append(process)
            else:
                self._count -= 1
            self._changed.notify()
        if not reuse:
            process.close()

    def _reap_idle(self) -> None:
        """Closes idle processes that exited, and those idle past IDLE_EXIT but one (called
        under the lock)."""
        now = time.monotonic()
        for process in list(self._idle):
            if not process.alive or (now - process.idle_since > IDLE_EXIT and self._count > 1):
                self._idle.remove(process)
                self._count -= 1
                process.close()

    def close(self) -> None:
        with self._changed:
            self._closed = True
            processes = [*self._idle, *self._busy.values()]
            self._idle.clear()
            self._changed.notify_all()
        for process in processes:
            process.close()

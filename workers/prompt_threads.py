"""Prompts are built off the engine's thread: rendered by a render process (render_pool.py),
tokenized, and a chat history cut to fit (prompt.py), one job per prompt thread. Waiting for a
render process or tokenizing in llama.cpp, a prompt thread holds no GIL, so the engine steps
on meanwhile. Results come back through `results()`, and a byte on the wake-up pipe tells the
worker's select loop that one is ready.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, Callable

from workers.render_pool import MAX_RENDERERS, RenderPool


class PromptThreads:
    def __init__(self, renderers: RenderPool) -> None:
        self.renderers = renderers
        # One more thread than render processes: a job that only tokenizes (an embedding)
        # is not held up by renderings.
        self._executor = ThreadPoolExecutor(MAX_RENDERERS + 1, thread_name_prefix="corral-prompt")
        self._jobs: dict[int, Future[Any]] = {}  # jobs whose result is still wanted
        self._running: set[Future[Any]] = set()  # every job not finished, wanted or not
        self._outbox: deque[tuple[int, Any]] = deque()
        self._lock = threading.Lock()
        self.wake_fd, self._wake_w = os.pipe()
        os.set_blocking(self.wake_fd, False)

    # ---- the engine's thread ---------------------------------------------------------------

    def submit(self, job_id: int, work: Callable[[], Any]) -> None:
        future = self._executor.submit(work)
        with self._lock:
            self._jobs[job_id] = future
            self._running.add(future)
        future.add_done_callback(lambda f: self._finished(job_id, f))

    def cancel(self, job_id: int) -> None:
        """Drops a job: it stops at once if it is rendering, its result never arrives."""
        with self._lock:
            future = self._jobs.pop(job_id, None)
        if future is not None and not future.done() and not future.cancel():
            self.renderers.cancel(job_id)

    @property
    def pending(self) -> bool:
        return bool(self._jobs)

    def results(self) -> list[tuple[int, Any]]:
        """(job id, what its work returned or the exception it raised) for each finished job."""
        done = []
        with self._lock:
            while self._outbox:
                job_id, outcome = self._outbox.popleft()
                if self._jobs.pop(job_id, None) is not None:
                    done.append((job_id, outcome))
        return done

    def drain_wakeups(self) -> None:
        """Empties the wake-up pipe (when select said it is readable, not on every step)."""
        try:
            os.read(self.wake_fd, 1 << 16)
        except BlockingIOError:
            pass

    def wait_until_idle(self, timeout: float) -> None:
        """Waits for every job to end, cancelled ones included: one may still be in a C call
        such as llama_tokenize that uses a model, and no model may be freed before it returns."""
        with self._lock:
            running = list(self._running)
        wait(running, timeout)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self.renderers.close()
        os.close(self._wake_w)
        os.close(self.wake_fd)

    # ---- prompt threads --------------------------------------------------------------------

    def _finished(self, job_id: int, future: Future[Any]) -> None:
        self.renderers.forget(job_id)
        with self._lock:
            self._running.discard(future)
            if future.cancelled() or job_id not in self._jobs:
                return
            self._outbox.append((job_id, future.exception() or future.result()))
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass  # closed: the worker is exiting

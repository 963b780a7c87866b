"""Work the engine's thread must not wait for, on threads beside it, in two lanes:

- PROMPT: building a request's prompt (rendered by a render process, render_pool.py, then
  tokenized and cut to fit, prompt.py) and tokenizing embedding inputs;
- GRAMMAR: a structured-output grammar's pass over the whole vocabulary, when the token the
  sampler chain chose is refused (grammar.py). It costs ~10 ms per alternative the grammar
  allows at that point, seconds for a wide schema: on the engine's thread it would stall every
  other stream of the model; here it delays only its own sequence.

Waiting for a render process, tokenizing or applying a grammar in llama.cpp, a side thread holds
no GIL, so the engine steps on meanwhile. Results come back through `results()`, and a byte on
the wake-up pipe tells the worker's select loop that one is ready.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Any, Callable

from workers.render_pool import MAX_RENDERERS, RenderPool

PROMPT, GRAMMAR = "prompt", "grammar"
# One more prompt thread than render processes: a job that only tokenizes (an embedding) is
# not held up by renderings. Grammar passes are CPU work in C: two at a time at most, so that
# wide schemas cannot take every core from decoding.
LANES = {PROMPT: MAX_RENDERERS + 1, GRAMMAR: 2}
Key = tuple[str, int]  # (lane, job id)


class SideThreads:
    def __init__(self, renderers: RenderPool) -> None:
        self.renderers = renderers
        self._lanes = {lane: ThreadPoolExecutor(n, thread_name_prefix=f"corral-{lane}")
                       for lane, n in LANES.items()}
        self._jobs: dict[Key, Future[Any]] = {}  # jobs whose result is still wanted
        self._running: set[Future[Any]] = set()  # every job not finished, wanted or not
        self._outbox: deque[tuple[Key, Any]] = deque()
        self._lock = threading.Lock()
        self.wake_fd, self._wake_w = os.pipe()
        os.set_blocking(self.wake_fd, False)

    # ---- the engine's thread ---------------------------------------------------------------

    def submit(self, lane: str, job_id: int, work: Callable[[], Any]) -> None:
        future = self._lanes[lane].submit(work)
        key = (lane, job_id)
        with self._lock:
            self._jobs[key] = future
            self._running.add(future)
        future.add_done_callback(lambda f: self._finished(key, f))

    def cancel(self, job_id: int) -> None:
        """Drops a job's prompt work: it stops at once if it is rendering, its result never
        arrives. (A grammar pass cannot be stopped; its result always arrives.)"""
        with self._lock:
            future = self._jobs.pop((PROMPT, job_id), None)
        if future is not None and not future.done() and not future.cancel():
            self.renderers.cancel(job_id)

    def results(self) -> list[tuple[Key, Any]]:
        """(key, what its work returned or the exception it raised) for each finished job."""
        done = []
        with self._lock:
            while self._outbox:
                key, outcome = self._outbox.popleft()
                if self._jobs.pop(key, None) is not None:
                    done.append((key, outcome))
        return done

    def drain_wakeups(self) -> None:
        """Empties the wake-up pipe (when select said it is readable, not on every step)."""
        try:
            os.read(self.wake_fd, 1 << 16)
        except BlockingIOError:
            pass

    def wait_until_idle(self, timeout: float) -> None:
        """Waits for every job to end, cancelled ones included: one may still be in a C call
        (llama_tokenize, a grammar pass) that uses a model, which must not be freed before."""
        with self._lock:
            running = list(self._running)
        wait(running, timeout)

    def close(self) -> None:
        for executor in self._lanes.values():
            executor.shutdown(wait=False, cancel_futures=True)
        self.renderers.close()
        os.close(self._wake_w)
        os.close(self.wake_fd)

    # ---- side threads ----------------------------------------------------------------------

    def _finished(self, key: Key, future: Future[Any]) -> None:
        if key[0] == PROMPT:
            self.renderers.forget(key[1])
        with self._lock:
            self._running.discard(future)
            if future.cancelled() or key not in self._jobs:
                return
            self._outbox.append((key, future.exception() or future.result()))
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass  # closed: the worker is exiting

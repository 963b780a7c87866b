"""Side threads: work done off the engine's thread, its results, failures and cancels."""

from __future__ import annotations

import select
import threading
import time
from typing import Any, Iterator

import pytest

from workers.side_threads import GRAMMAR, PROMPT, SideThreads
from workers.protocol import Render
from workers.render_pool import RenderPool, RenderStopped

WAIT = 10.0


@pytest.fixture
def threads() -> Iterator[SideThreads]:
    pt = SideThreads(RenderPool())
    yield pt
    pt.close()


def collect(pt: SideThreads, job_id: int) -> Any:
    """Waits on the wake-up pipe, as the worker's select loop does, until `job_id` is done."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        select.select([pt.wake_fd], [], [], 0.1)
        pt.drain_wakeups()
        for (_, done_id), outcome in pt.results():
            if done_id == job_id:
                return outcome
    raise AssertionError(f"job {job_id} did not finish within {WAIT} s")


def test_a_result_comes_back_through_the_wake_up_pipe(threads: SideThreads) -> None:
    threads.submit(PROMPT, 1, lambda: [1, 2, 3])
    assert collect(threads, 1) == [1, 2, 3]


def test_an_exception_is_the_jobs_outcome(threads: SideThreads) -> None:
    threads.submit(PROMPT, 1, lambda: 1 / 0)
    assert isinstance(collect(threads, 1), ZeroDivisionError)


def test_a_cancelled_jobs_result_never_arrives(threads: SideThreads) -> None:
    release = threading.Event()
    threads.submit(PROMPT, 1, lambda: release.wait(WAIT))
    threads.cancel(1)
    release.set()
    threads.submit(PROMPT, 2, lambda: "next")
    assert collect(threads, 2) == "next"


def test_cancelling_a_job_stops_its_rendering(threads: SideThreads) -> None:
    outcome: list[BaseException] = []

    def job() -> str:
        try:
            return threads.renderers.render(1, Render("{{range 1000000000}}{{end}}", []))
        except RenderStopped as exc:
            outcome.append(exc)
            raise

    threads.submit(PROMPT, 1, job)
    time.sleep(0.5)
    threads.cancel(1)
    threads.wait_until_idle(WAIT)
    assert len(outcome) == 1


def test_wait_until_idle_waits_for_cancelled_jobs_still_running(threads: SideThreads) -> None:
    finished = threading.Event()

    def job() -> None:
        time.sleep(0.3)  # a C call that cannot be interrupted, such as llama_tokenize
        finished.set()

    threads.submit(PROMPT, 1, job)
    threads.cancel(1)
    threads.wait_until_idle(WAIT)
    assert finished.is_set()


def test_a_grammar_pass_is_delivered_even_when_its_job_is_cancelled(threads: SideThreads) -> None:
    release = threading.Event()
    threads.submit(GRAMMAR, 1, lambda: release.wait(WAIT) and 42)
    threads.cancel(1)  # the request went away: its samplers are freed when the pass ends
    release.set()
    assert collect(threads, 1) == 42

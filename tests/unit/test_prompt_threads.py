"""Prompt threads: jobs built off the engine's thread, their results, failures and cancels."""

from __future__ import annotations

import select
import threading
import time
from typing import Any, Iterator

import pytest

from workers.prompt_threads import PromptThreads
from workers.protocol import Render
from workers.render_pool import RenderPool, RenderStopped

WAIT = 10.0


@pytest.fixture
def threads() -> Iterator[PromptThreads]:
    pt = PromptThreads(RenderPool())
    yield pt
    pt.close()


def collect(pt: PromptThreads, job_id: int) -> Any:
    """Waits on the wake-up pipe, as the worker's select loop does, until `job_id` is done."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        select.select([pt.wake_fd], [], [], 0.1)
        pt.drain_wakeups()
        for done_id, outcome in pt.results():
            if done_id == job_id:
                return outcome
    raise AssertionError(f"job {job_id} did not finish within {WAIT} s")


def test_a_result_comes_back_through_the_wake_up_pipe(threads: PromptThreads) -> None:
    threads.submit(1, lambda: [1, 2, 3])
    assert collect(threads, 1) == [1, 2, 3]


def test_an_exception_is_the_jobs_outcome(threads: PromptThreads) -> None:
    threads.submit(1, lambda: 1 / 0)
    assert isinstance(collect(threads, 1), ZeroDivisionError)


def test_a_cancelled_jobs_result_never_arrives(threads: PromptThreads) -> None:
    release = threading.Event()
    threads.submit(1, lambda: release.wait(WAIT))
    threads.cancel(1)
    release.set()
    threads.submit(2, lambda: "next")
    assert collect(threads, 2) == "next"
    assert not threads.pending


def test_cancelling_a_job_stops_its_rendering(threads: PromptThreads) -> None:
    outcome: list[BaseException] = []

    def job() -> str:
        try:
            return threads.renderers.render(1, Render("{{range 1000000000}}{{end}}", []))
        except RenderStopped as exc:
            outcome.append(exc)
            raise

    threads.submit(1, job)
    time.sleep(0.5)
    threads.cancel(1)
    threads.wait_until_idle(WAIT)
    assert len(outcome) == 1


def test_wait_until_idle_waits_for_cancelled_jobs_still_running(threads: PromptThreads) -> None:
    finished = threading.Event()

    def job() -> None:
        time.sleep(0.3)  # a C call that cannot be interrupted, such as llama_tokenize
        finished.set()

    threads.submit(1, job)
    threads.cancel(1)
    threads.wait_until_idle(WAIT)
    assert finished.is_set()

"""The rendering thread: results, failures, the deadline watchdog and cancellation."""

from __future__ import annotations

import select
import threading
import time
from typing import Any, Callable, Iterator

import pytest

from workers.render import PromptThread, RenderStopped, RenderTimeout

WAIT = 5.0  # generous upper bound for anything to come back


@pytest.fixture
def thread() -> Iterator[PromptThread]:
    pt = PromptThread()
    yield pt
    pt.close()


@pytest.fixture
def short_thread() -> Iterator[PromptThread]:
    pt = PromptThread(timeout=0.2)
    yield pt
    pt.close()


def collect(pt: PromptThread, job_id: int, enforce: bool = False) -> tuple[Any, list]:
    """Polls until `job_id` finishes; returns its outcome and every result seen meanwhile."""
    seen: list[tuple[int, Any]] = []
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        if enforce:
            pt.enforce_deadline()
        seen.extend(pt.results())
        for done_id, outcome in seen:
            if done_id == job_id:
                return outcome, seen
        time.sleep(0.01)
    raise AssertionError(f"job {job_id} did not finish within {WAIT} s (saw {seen})")


def endless() -> None:
    x = 0
    while True:
        x += 1


def gated(started: threading.Event, release: threading.Event, value: str) -> Callable[[], str]:
    """A job that says it started, then waits to be released before returning `value`."""
    def job() -> str:
        started.set()
        release.wait(WAIT)
        return value
    return job


def test_a_result_comes_back_and_wakes_the_select_loop(thread: PromptThread) -> None:
    thread.submit(1, lambda: [1, 2, 3])
    readable, _, _ = select.select([thread.wake_fd], [], [], WAIT)
    assert readable == [thread.wake_fd]
    outcome, _ = collect(thread, 1)
    assert outcome == [1, 2, 3]
    assert not thread.pending


def test_an_exception_raised_by_the_job_is_its_outcome(thread: PromptThread) -> None:
    def fail() -> None:
        raise ValueError("bad template")

    thread.submit(1, fail)
    outcome, _ = collect(thread, 1)
    assert isinstance(outcome, ValueError) and str(outcome) == "bad template"


def test_jobs_run_in_order_and_each_result_comes_back_once(thread: PromptThread) -> None:
    for job_id in range(1, 4):
        thread.submit(job_id, lambda j=job_id: [j])
    _, seen = collect(thread, 3)
    assert seen == [(1, [1]), (2, [2]), (3, [3])]
    assert thread.results() == []


def test_an_endless_pure_python_loop_is_stopped_by_the_deadline(short_thread: PromptThread) -> None:
    short_thread.submit(1, endless)
    outcome, _ = collect(short_thread, 1, enforce=True)
    assert type(outcome) is RenderTimeout


def test_the_thread_keeps_working_after_a_timeout(short_thread: PromptThread) -> None:
    short_thread.submit(1, endless)
    collect(short_thread, 1, enforce=True)
    short_thread.submit(2, lambda: ["ok"])
    outcome, _ = collect(short_thread, 2, enforce=True)
    assert outcome == ["ok"]


def test_enforce_deadline_leaves_a_job_within_its_time_alone(thread: PromptThread) -> None:
    started, release = threading.Event(), threading.Event()
    thread.submit(1, gated(started, release, "done"))
    assert started.wait(WAIT)
    left = thread.enforce_deadline()
    assert left is not None and 0 < left <= thread.timeout
    release.set()
    outcome, _ = collect(thread, 1, enforce=True)
    assert outcome == "done"


def test_enforce_deadline_with_nothing_rendering_returns_none(thread: PromptThread) -> None:
    assert thread.enforce_deadline() is None


def test_a_cancelled_running_job_never_delivers_and_the_thread_goes_on(
        thread: PromptThread) -> None:
    started = threading.Event()

    def job() -> None:
        started.set()
        endless()

    thread.submit(1, job)
    assert started.wait(WAIT)
    thread.cancel(1)
    thread.submit(2, lambda: ["next"])
    outcome, seen = collect(thread, 2)
    assert outcome == ["next"]
    assert [job_id for job_id, _ in seen] == [2]
    assert thread.results() == []


def test_cancelling_a_running_job_stops_it_with_render_stopped(thread: PromptThread) -> None:
    started = threading.Event()
    raised: list[BaseException] = []

    def job() -> None:
        started.set()
        try:
            endless()
        except BaseException as exc:
            raised.append(exc)
            raise

    thread.submit(1, job)
    assert started.wait(WAIT)
    thread.cancel(1)
    thread.submit(2, lambda: None)
    collect(thread, 2)
    assert len(raised) == 1 and type(raised[0]) is RenderStopped


def test_a_cancelled_queued_job_never_runs(thread: PromptThread) -> None:
    started, release = threading.Event(), threading.Event()
    ran = threading.Event()
    thread.submit(1, gated(started, release, "first"))
    assert started.wait(WAIT)
    thread.submit(2, ran.set)
    thread.cancel(2)
    release.set()
    thread.submit(3, lambda: "third")
    outcome, seen = collect(thread, 3)
    assert outcome == "third"
    assert not ran.is_set()
    assert [job_id for job_id, _ in seen] == [1, 3]


def test_cancelling_an_unknown_job_is_harmless(thread: PromptThread) -> None:
    thread.cancel(99)
    thread.submit(1, lambda: "ok")
    outcome, _ = collect(thread, 1)
    assert outcome == "ok"


def test_wait_until_idle_returns_once_the_running_job_ends(thread: PromptThread) -> None:
    started, release = threading.Event(), threading.Event()
    thread.submit(1, gated(started, release, "done"))
    assert started.wait(WAIT)
    threading.Timer(0.2, release.set).start()
    thread.wait_until_idle(WAIT)
    assert release.is_set()  # it waited for the job, not just returned

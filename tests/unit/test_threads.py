"""The front end's threads at shutdown: a thread stuck in blocking work must not keep a stopped
server alive (interpreter exit waits for executor threads)."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from server import threads


async def test_finish_reports_the_threads_ended_when_their_work_is_done() -> None:
    executor = ThreadPoolExecutor(1)
    executor.submit(lambda: None).result()
    assert await threads.finish(5.0, (executor,)) is True


async def test_finish_gives_up_on_a_thread_stuck_past_the_grace() -> None:
    executor = ThreadPoolExecutor(1)
    release = threading.Event()
    executor.submit(release.wait, 30)
    try:
        assert await threads.finish(0.2, (executor,)) is False
    finally:
        release.set()

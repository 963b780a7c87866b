"""Render processes: prompts rendered apart from the worker, each charged its own CPU time,
bounded in memory, stopped at once when cancelled."""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import pytest

from workers.protocol import Render
from workers.render_pool import RenderPool, RenderStopped, RenderTimeout
from workers.template.render import TemplateError

HI = [{"role": "user", "content": "hi"}]
SLOW = "{{range 200000}}{{end}}done"  # about half a second of CPU, within budget
ENDLESS = "{{range 1000000000}}{{end}}"


@pytest.fixture
def pool() -> Iterator[RenderPool]:
    p = RenderPool(cpu_seconds=5.0, wall_seconds=30.0)
    yield p
    p.close()


def test_a_go_template_renders_in_a_render_process(pool: RenderPool) -> None:
    assert pool.render(1, Render("<{{ .Prompt }}>", HI)) == "<hi>"


def test_a_gguf_jinja_template_renders_with_bos_stripped(pool: RenderPool) -> None:
    jinja = "{{ bos_token }}{% for m in messages %}[{{ m.content }}]{% endfor %}"
    assert pool.render(1, Render("", HI, chat_template=jinja, bos="<s>")) == "[hi]"


def test_a_template_error_comes_back_as_one(pool: RenderPool) -> None:
    with pytest.raises(TemplateError, match="template error"):
        pool.render(1, Render("{{ .Prompt ", HI))


def test_a_runaway_template_stops_at_its_cpu_limit() -> None:
    pool = RenderPool(cpu_seconds=1.0)
    try:
        with pytest.raises(RenderTimeout, match="1s of CPU time"):
            pool.render(1, Render("", HI, chat_template=(
                "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}"
                "{% endfor %}")))
    finally:
        pool.close()


def test_a_jinja_memory_bomb_hits_the_memory_ceiling_and_the_next_render_works(
        pool: RenderPool) -> None:
    with pytest.raises(TemplateError, match="memory"):
        pool.render(1, Render("", HI, chat_template="{{ 'a'.ljust(1500000000) | length }}"))
    assert pool.render(2, Render("{{ .Prompt }}", HI)) == "hi"


def test_cancelling_a_job_stops_its_rendering_at_once(pool: RenderPool) -> None:
    with ThreadPoolExecutor(1) as threads:
        rendering = threads.submit(pool.render, 7, Render(ENDLESS, HI))
        time.sleep(0.5)
        started = time.monotonic()
        pool.cancel(7)
        with pytest.raises(RenderStopped):
            rendering.result(timeout=5)
        assert time.monotonic() - started < 2  # the CPU limit (5 s) did not end it


def test_a_cancelled_job_renders_nothing_more(pool: RenderPool) -> None:
    pool.cancel(3)
    with pytest.raises(RenderStopped):
        pool.render(3, Render("{{ .Prompt }}", HI))


def test_a_short_render_is_not_held_up_by_slow_ones(pool: RenderPool) -> None:
    finished: list[str] = []

    def render(job: int, template: str) -> None:
        pool.render(job, Render(template, HI))
        finished.append("short" if template == "{{ .Prompt }}" else "slow")

    with ThreadPoolExecutor(5) as threads:
        slow = [threads.submit(render, job, SLOW) for job in range(4)]
        time.sleep(0.3)
        threads.submit(render, 9, "{{ .Prompt }}").result(timeout=30)
        for future in slow:
            future.result(timeout=60)
    assert finished[0] == "short"


def test_a_burst_of_short_renders_is_served_by_the_process_already_up(pool: RenderPool) -> None:
    """Not by a new process each (~0.2 s of CPU to start, against ~0.3 ms to render)."""
    pool.render(0, Render("{{ .Prompt }}", HI))
    with ThreadPoolExecutor(8) as threads:
        jobs = [threads.submit(pool.render, job, Render("{{ .Prompt }}", HI)) for job in range(1, 9)]
        assert [f.result(timeout=30) for f in jobs] == ["hi"] * 8
    assert pool._count <= 2


def test_a_process_stopped_past_the_wall_limit_is_killed_and_replaced() -> None:
    pool = RenderPool(cpu_seconds=5.0, wall_seconds=1.0)
    try:
        pool.render(1, Render("{{ .Prompt }}", HI))  # the process is up
        [process] = pool._idle
        os.kill(process.popen.pid, signal.SIGSTOP)  # it will never answer: no CPU is used
        with pytest.raises(RenderTimeout, match="longer than 1s"):
            pool.render(2, Render("{{ .Prompt }}", HI))
        assert process.popen.wait(timeout=5) == -signal.SIGKILL
        assert pool.render(3, Render("{{ .Prompt }}!", HI)) == "hi!"
    finally:
        pool.close()


def test_no_more_processes_than_the_limit_run_at_once() -> None:
    pool = RenderPool(cpu_seconds=5.0, max_processes=2)
    seen: set[int] = set()
    stop = threading.Event()

    def count() -> None:
        while not stop.is_set():
            with pool._changed:
                seen.add(pool._count)
            time.sleep(0.01)

    try:
        watcher = threading.Thread(target=count)
        watcher.start()
        with ThreadPoolExecutor(4) as threads:
            jobs = [threads.submit(pool.render, job, Render(SLOW, HI)) for job in range(4)]
            assert [f.result(timeout=60) for f in jobs] == ["done"] * 4
        stop.set()
        watcher.join()
        assert max(seen) == 2
    finally:
        pool.close()

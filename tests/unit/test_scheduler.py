"""Scheduler policy (slots, queueing, eviction, reloads, keep-alive) with fake workers.

The fake stands in for a worker process: it loads instantly and finishes a job only when the
test says so, which makes the order of events explicit.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from scheduler.devices import Device
from scheduler.scheduler import Job, ModelRef, QueueFull, Scheduler, SchedulerError
from workers import protocol

GB = 1 << 30
OPTIONS: Any = {}
PROMPT: Any = {"raw": "hi", "messages": [], "template": "", "context": []}


class FakeWorker:
    instances: list["FakeWorker"] = []

    def __init__(self, device: Device, n_threads: int, debug: bool, on_exit: Any) -> None:
        self.device, self.on_exit = device, on_exit
        self.alive, self.gpu_offload = False, False
        self.hung = False  # a SIGSTOPped process: never answers
        self.killed = False
        self.loaded: list[str] = []
        self.events: list[str] = []
        self.jobs: dict[int, asyncio.Queue] = {}
        FakeWorker.instances.append(self)

    async def start(self) -> None:
        self.alive = True

    async def stop(self) -> None:
        self.alive = False

    def kill(self) -> None:
        self.killed = True

    def open_job(self, job_id: int) -> asyncio.Queue:
        self.jobs[job_id] = asyncio.Queue()
        return self.jobs[job_id]

    def close_job(self, job_id: int) -> None:
        self.jobs.pop(job_id, None)

    def send(self, msg: Any) -> None:
        self.events.append(type(msg).__name__)

    async def request(self, msg: Any) -> Any:
        if isinstance(msg, protocol.Ping):
            if self.hung:
                await asyncio.Event().wait()
            return protocol.Pong(msg.nonce)
        if isinstance(msg, protocol.Load):
            self.loaded.append(msg.model_id)
            return protocol.Loaded(msg.model_id, 1, GB, False)
        self.loaded.remove(msg.model_id)
        return protocol.Unloaded(msg.model_id)

    def finish(self, job: Job) -> None:
        self.jobs[job.id].put_nowait(protocol.Done(job.id, "stop", 1, 1, 1, 1))


class OneCPU:
    def devices(self) -> list[Device]:
        return [Device("cpu", "cpu", 64 * GB, 32 * GB)]


def ref(name: str) -> ModelRef:
    return ModelRef(name=name, digest=f"sha256:{name:0>64}", manifest_digest=name, path=f"/{name}",
                    file_size=GB, kv_bytes_per_token=0, context_length=0, n_vocab=1000,
                    details={})


async def make(**kw: Any) -> tuple[Scheduler, FakeWorker]:
    FakeWorker.instances.clear()
    settings = {"slots": 1, "max_queue": 8, "max_loaded_per_device": 3,
                "default_keep_alive": 300.0, **kw}
    sched = Scheduler(OneCPU(), n_threads=1, worker_factory=FakeWorker, **settings)
    await sched.start()
    return sched, FakeWorker.instances[0]


async def run_to_end(job: Job) -> protocol.FromWorker:
    job.runner.worker.finish(job)
    return await job.next()


async def submit(sched: Scheduler, name: str, num_ctx: int = 4096,
                 keep_alive: float | None = None) -> Job:
    # A scheduler bug would show as a wait that never ends: fail fast instead.
    return await asyncio.wait_for(
        sched.submit(ref(name), num_ctx, keep_alive, PROMPT, OPTIONS, False), 5)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_requests_beyond_the_slots_wait_and_run_in_arrival_order() -> None:
    sched, _ = await make(slots=1)
    first = await submit(sched, "a")
    second = asyncio.create_task(submit(sched, "a"))
    await settle()
    third = asyncio.create_task(submit(sched, "a"))
    await settle()
    assert not second.done() and not third.done()
    await run_to_end(first)
    await settle()
    assert second.done() and not third.done()
    await run_to_end(second.result())
    await settle()
    assert third.done()


async def test_more_waiters_than_max_queue_are_refused() -> None:
    sched, _ = await make(slots=1, max_queue=1)
    await submit(sched, "a")
    waiting = asyncio.create_task(submit(sched, "a"))
    await settle()
    with pytest.raises(QueueFull):
        await submit(sched, "a")
    waiting.cancel()


async def test_a_cancelled_waiter_leaves_the_queue() -> None:
    sched, _ = await make(slots=1, max_queue=1)
    await submit(sched, "a")
    waiting = asyncio.create_task(submit(sched, "a"))
    await settle()
    waiting.cancel()
    await settle()
    queued_again = asyncio.create_task(submit(sched, "a"))  # would be QueueFull if it leaked
    await settle()
    assert not queued_again.done()
    queued_again.cancel()


async def test_idle_model_is_evicted_for_another_at_the_model_limit() -> None:
    sched, worker = await make(max_loaded_per_device=1)
    await run_to_end(await submit(sched, "a"))
    job_b = await submit(sched, "b")
    assert [r.ref.name for r in sched.running()] == ["b"]
    assert len(worker.loaded) == 1 and job_b.runner.ref.name == "b"


async def test_busy_model_is_not_evicted_the_newcomer_waits() -> None:
    sched, _ = await make(max_loaded_per_device=1)
    job_a = await submit(sched, "a")
    pending_b = asyncio.create_task(submit(sched, "b"))
    await settle()
    assert not pending_b.done()
    await run_to_end(job_a)
    job_b = await asyncio.wait_for(pending_b, 1)
    assert [r.ref.name for r in sched.running()] == ["b"] and job_b.runner.ref.name == "b"


async def test_another_context_size_reloads_the_model_once_it_is_idle() -> None:
    sched, worker = await make()
    job = await submit(sched, "a", num_ctx=4096)
    bigger = asyncio.create_task(submit(sched, "a", num_ctx=8192))
    await settle()
    assert not bigger.done()  # the running request keeps its context
    await run_to_end(job)
    job2 = await asyncio.wait_for(bigger, 1)
    assert job2.runner.num_ctx == 8192 and len(worker.loaded) == 1


async def test_keep_alive_zero_unloads_when_the_last_job_ends() -> None:
    sched, worker = await make()
    job = await submit(sched, "a", keep_alive=0)
    assert worker.loaded
    await run_to_end(job)
    await settle()
    assert worker.loaded == [] and sched.running() == []


async def test_cancelled_job_frees_its_slot_and_tells_the_worker() -> None:
    sched, worker = await make(slots=1)
    job = await submit(sched, "a")
    job.close()
    assert worker.events[-1] == "Cancel"
    nxt = await asyncio.wait_for(submit(sched, "a"), 1)
    assert nxt.runner is job.runner


async def test_dead_worker_fails_its_jobs_and_forgets_its_models() -> None:
    sched, worker = await make()
    job = await submit(sched, "a")
    worker.jobs[job.id].put_nowait(protocol.Failed(job.id, "crashed"))
    worker.alive = False
    worker.on_exit(worker)
    assert isinstance(await job.next(), protocol.Failed)
    assert sched.running() == []
    await sched.stop()


async def test_a_job_whose_message_cannot_be_sent_gives_its_slot_back() -> None:
    sched, worker = await make(slots=1)

    def unencodable(msg: Any) -> None:
        raise TypeError("Integer exceeds 64-bit range")

    worker.send = unencodable  # type: ignore[method-assign]
    with pytest.raises(TypeError):
        await submit(sched, "a")
    del worker.send
    job = await submit(sched, "a")  # waits forever (and times out) if the slot leaked
    assert job.runner.active == 1


async def test_probe_reports_a_worker_that_answers_as_ready() -> None:
    sched, _ = await make()
    assert await sched.probe(timeout=1) == {"cpu": "ready"}


async def test_probe_reports_a_hung_worker_as_not_responding() -> None:
    sched, worker = await make()
    worker.hung = True
    assert await sched.probe(timeout=0.05) == {"cpu": "not responding"}


async def test_a_model_whose_load_killed_the_worker_is_refused_afterwards() -> None:
    sched, worker = await make()
    load_started = asyncio.Event()

    async def die_while_loading(msg: Any) -> Any:
        load_started.set()
        await asyncio.Event().wait()

    worker.request = die_while_loading  # type: ignore[method-assign]
    first = asyncio.create_task(submit(sched, "bad"))
    await load_started.wait()
    worker.alive = False
    worker.on_exit(worker)  # what the handle reports when the process dies
    with pytest.raises(SchedulerError, match="unexpectedly stopped"):
        await first
    with pytest.raises(SchedulerError, match="crashed"):
        await submit(sched, "bad")


async def test_the_watchdog_kills_a_worker_that_stops_answering() -> None:
    sched, worker = await make(hang_timeout=0.1)
    worker.hung = True
    for _ in range(50):
        if worker.killed:
            break
        await asyncio.sleep(0.02)
    assert worker.killed
    await sched.stop()


async def test_the_watchdog_leaves_an_answering_worker_alone() -> None:
    sched, worker = await make(hang_timeout=0.1)
    await asyncio.sleep(0.3)
    assert not worker.killed
    await sched.stop()

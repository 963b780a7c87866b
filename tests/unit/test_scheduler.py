"""Scheduler policy (slots, queueing, eviction, reloads, keep-alive, replicas, splits, hangs)
with fake workers.

The fake stands in for a worker process: it loads instantly (unless told to hold the load) and
finishes a job only when the test says so, which makes the order of events explicit.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

import pytest

from scheduler import pool, watchdog
from scheduler.devices import Device, SimulatedInventory, simulated
from scheduler.errors import JobFailed, QueueFull, SchedulerError
from scheduler.job import Job
from scheduler.memory import ModelMemory
from scheduler.plan import ALL_LAYERS
from scheduler.runner import ModelRef, needs_reload
from scheduler.scheduler import Config, Scheduler
from scheduler.worker import WorkerDied
from workers import protocol
from workers.options import LoadOptions, merge

GB = 1 << 30
OPTIONS: Any = {}
PROMPT: Any = {"raw": "hi", "messages": [], "template": "", "context": []}


class FakeWorker:
    instances: list["FakeWorker"] = []
    failing_starts: set[str] = set()  # device ids whose worker dies starting up
    weights: dict[str, int] = {}  # by model path: what llama.cpp "loaded" (the header's, unless set)

    def __init__(self, device: Device, n_threads: int, debug: bool, on_exit: Any) -> None:
        self.device, self.on_exit, self.n_threads = device, on_exit, n_threads
        self.alive, self.gpu_offload = False, device.is_gpu
        self.hung = False  # a SIGSTOPped process: never answers
        self.killed = False
        self.hold_loads: asyncio.Event | None = None  # set: loads wait for it
        self.loaded: list[str] = []
        self.loads: list[protocol.Load] = []
        self.events: list[str] = []
        self.jobs: dict[int, asyncio.Queue] = {}
        self.step_times: dict[str, deque] = {}
        self.last_steps: dict[str, protocol.Step] = {}
        self.last_heard = time.monotonic()
        FakeWorker.instances.append(self)

    async def start(self) -> None:
        if self.device.id in FakeWorker.failing_starts:
            raise WorkerDied("worker did not start")
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
        if isinstance(msg, protocol.Embed):
            reply = protocol.Embedded(msg.job_id, [[1.0]] * len(msg.inputs), 3, memory=GB)
            self.jobs[msg.job_id].put_nowait(reply)

    async def request(self, msg: Any) -> Any:
        if isinstance(msg, protocol.Ping):
            if self.hung:
                await asyncio.Event().wait()
            self.last_heard = time.monotonic()
            return protocol.Pong(msg.nonce)
        if isinstance(msg, protocol.Load):
            self.loads.append(msg)
            if self.hold_loads is not None:
                await self.hold_loads.wait()
            self.loaded.append(msg.model_id)
            return protocol.Loaded(msg.model_id, 1, FakeWorker.weights[msg.path], False)
        self.loaded.remove(msg.model_id)
        return protocol.Unloaded(msg.model_id)

    def step(self, model_id: str, duration_ns: int, tokens: int, kv_used: int = 0) -> None:
        """What the handle records when the worker reports an engine step."""
        self.step_times.setdefault(model_id, deque(maxlen=32)).append((duration_ns, tokens))
        self.last_steps[model_id] = protocol.Step(model_id, [], tokens, 1, duration_ns, kv_used,
                                                  kv_cells=4096)
        self.last_heard = time.monotonic()

    def finish(self, job: Job) -> None:
        self.jobs[job.id].put_nowait(protocol.Done(job.id, "stop", 1, 1, 1, 1))


def workers_on(device_id: str) -> list[FakeWorker]:
    return [w for w in FakeWorker.instances if w.device.id == device_id]


ONE_CPU = SimulatedInventory([Device("cpu", "cpu", 64 * GB, 32 * GB)],
                             Device("cpu", "cpu", 64 * GB, 32 * GB))


def ref(name: str, layers: int = 4, layer_gb: float = 0.25) -> ModelRef:
    """A model of `layers` x `layer_gb` of weights (1 GB by default) with a negligible cache."""
    memory = ModelMemory(layers=(int(layer_gb * GB),) * layers, input_bytes=0, output_bytes=0,
                         tied_output=False, kv_bytes_per_cell=0, n_embd=8, n_head=1, n_vocab=1000)
    FakeWorker.weights[f"/{name}"] = sum(memory.layers)
    return ModelRef(name=name, digest=f"sha256:{name:0>64}", manifest_digest=name, path=f"/{name}",
                    memory=memory, context_length=0, n_vocab=1000, details={})


async def make(inventory: SimulatedInventory = ONE_CPU, **kw: Any) -> tuple[Scheduler, FakeWorker]:
    FakeWorker.instances.clear()
    config = Config(**{"slots": 1, "max_queue": 8, "max_loaded": 3, **kw})
    sched = Scheduler(inventory, config, worker_factory=FakeWorker)  # type: ignore[arg-type]
    await sched.start()
    return sched, FakeWorker.instances[0]


async def run_to_end(job: Job) -> Any:
    job.runner.worker.finish(job)
    return await anext(job)


def load_options(num_ctx: int = 4096, **options: Any) -> LoadOptions:
    """The load options of a request that sets `options` (the others at their defaults)."""
    return merge({}, {"num_ctx": num_ctx, **options}, default_num_ctx=num_ctx)[1]


async def submit(sched: Scheduler, name: str | ModelRef, num_ctx: int = 4096,
                 keep_alive: float | None = None, **options: Any) -> Job:
    # A scheduler bug would show as a wait that never ends: fail fast instead.
    model = ref(name) if isinstance(name, str) else name
    return await asyncio.wait_for(
        sched.submit(model, load_options(num_ctx, **options), keep_alive, PROMPT, OPTIONS,
                     False), 5)


def loaded(sched: Scheduler) -> list[str]:
    """The names of the loaded runners, replicas each on their own."""
    return [r.name for r in sched.snapshot().runners]


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
    sched, worker = await make(max_loaded=1)
    await run_to_end(await submit(sched, "a"))
    job_b = await submit(sched, "b")
    assert loaded(sched) == ["b"]
    assert len(worker.loaded) == 1 and job_b.runner.ref.name == "b"


async def test_busy_model_is_not_evicted_the_newcomer_waits() -> None:
    sched, _ = await make(max_loaded=1)
    job_a = await submit(sched, "a")
    pending_b = asyncio.create_task(submit(sched, "b"))
    await settle()
    assert not pending_b.done()
    await run_to_end(job_a)
    job_b = await asyncio.wait_for(pending_b, 1)
    assert loaded(sched) == ["b"] and job_b.runner.ref.name == "b"


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
    assert worker.loaded == [] and loaded(sched) == []


async def test_a_model_whose_requests_left_while_it_loaded_expires_at_its_keep_alive() -> None:
    sched, worker = await make()
    worker.hold_loads = asyncio.Event()
    gone = asyncio.create_task(submit(sched, "a", keep_alive=0.05))
    await settle()
    gone.cancel()  # the client went away during the load
    worker.hold_loads.set()
    await settle()
    assert loaded(sched) == ["a"] and sched.snapshot().runners[0].expires_at > time.time()
    await asyncio.sleep(0.1)
    await settle()
    assert loaded(sched) == [] and worker.loaded == []


async def test_leaving_an_unfinished_job_cancels_it_and_frees_its_slot() -> None:
    sched, worker = await make(slots=1)
    async with await submit(sched, "a") as job:
        pass  # the client went away
    assert worker.events[-1] == "Cancel"
    nxt = await asyncio.wait_for(submit(sched, "a"), 1)
    assert nxt.runner is job.runner


async def test_dead_worker_fails_its_jobs_and_forgets_its_models() -> None:
    sched, worker = await make()
    job = await submit(sched, "a")
    worker.jobs[job.id].put_nowait(protocol.Failed(job.id, "crashed"))
    worker.alive = False
    worker.on_exit(worker)
    with pytest.raises(JobFailed, match="crashed"):
        await anext(job)
    assert loaded(sched) == []
    await sched.stop()


async def test_a_load_waits_for_a_restarting_worker_instead_of_failing(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool, "RESTART_DELAY", 0.05)
    sched, worker = await make()
    worker.alive = False
    worker.on_exit(worker)  # the process died; a new one is on its way
    job = await submit(sched, "a")
    assert job.runner.worker is not worker and job.runner.worker.alive


async def test_a_worker_whose_device_left_the_inventory_is_not_restarted_and_its_model_moves(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool, "RESTART_DELAY", 0.01)
    inventory = simulated("cpu:8G,cpu:8G")
    sched, _ = await make(inventory)
    job = await submit(sched, "a")
    lost = job.runner.worker
    inventory.gpus_or_cpus = [d for d in inventory.gpus_or_cpus if d.id != lost.device.id]
    lost.alive = False
    lost.on_exit(lost)  # its node left the cluster, and the actor with it
    await asyncio.sleep(0.1)
    assert len(workers_on(lost.device.id)) == 1
    moved = await submit(sched, "a")
    assert moved.runner.worker.device.id != lost.device.id
    assert set(await sched.probe(timeout=1)) == {d.id for d in inventory.gpus_or_cpus}


async def test_a_job_whose_message_cannot_be_sent_gives_its_slot_back() -> None:
    sched, worker = await make(slots=1)

    def unencodable(msg: Any) -> None:
        raise TypeError("Integer exceeds 64-bit range")

    worker.send = unencodable  # type: ignore[method-assign]
    with pytest.raises(TypeError):
        await submit(sched, "a")
    del worker.send
    job = await submit(sched, "a")  # waits forever (and times out) if the slot leaked
    assert job.runner.refcount == 1


async def test_probe_reports_a_worker_that_answers_as_ready() -> None:
    sched, _ = await make()
    assert await sched.probe(timeout=1) == {"cpu": "ready"}


async def test_probe_reports_a_hung_worker_as_not_responding() -> None:
    sched, worker = await make()
    worker.hung = True
    assert await sched.probe(timeout=0.05) == {"cpu": "not responding"}


async def test_a_load_that_killed_the_worker_is_refused_with_its_load_options_only() -> None:
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
    # Other load options may load the same weights: a request's own options crashed it.
    job = await submit(sched, "bad", num_ctx=2048)
    assert loaded(sched) == ["bad"]
    await run_to_end(job)


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


# ---- fairness ---------------------------------------------------------------------------------

async def test_a_busy_model_does_not_hold_up_another_model() -> None:
    sched, _ = await make(slots=1)
    await submit(sched, "a")
    waiting_a = asyncio.create_task(submit(sched, "a"))
    await settle()
    job_b = await submit(sched, "b")  # would time out if it queued behind a's waiter
    assert job_b.runner.ref.name == "b" and not waiting_a.done()
    waiting_a.cancel()


async def test_a_newcomer_does_not_take_a_freed_slot_from_an_earlier_waiter() -> None:
    sched, _ = await make(slots=1)
    first = await submit(sched, "a")
    earlier = asyncio.create_task(submit(sched, "a"))
    await settle()
    first.close()  # frees the slot; the newcomer arrives before the waiter has run
    newcomer = asyncio.create_task(submit(sched, "a"))
    await settle()
    assert earlier.done() and not newcomer.done()
    newcomer.cancel()


async def test_every_waiter_shares_a_failed_first_load() -> None:
    sched, worker = await make()
    worker.hold_loads = asyncio.Event()

    async def fail(msg: Any) -> Any:
        await worker.hold_loads.wait()  # type: ignore[union-attr]
        return protocol.LoadFailed(msg.model_id, "bad file")

    worker.request = fail  # type: ignore[method-assign]
    waiters = [asyncio.create_task(submit(sched, "a")) for _ in range(3)]
    await settle()
    worker.hold_loads.set()
    results = await asyncio.gather(*waiters, return_exceptions=True)
    assert [str(r) for r in results] == ["unable to load model: bad file"] * 3



async def test_a_load_past_the_load_timeout_fails_and_its_worker_is_killed() -> None:
    sched, worker = await make(load_timeout=0.05)
    worker.hold_loads = asyncio.Event()  # llama.cpp never returns from the load
    with pytest.raises(SchedulerError, match="timed out waiting for the model to load"):
        await submit(sched, "a")
    assert worker.killed


# ---- devices and placement -------------------------------------------------------------------

async def test_the_model_limit_defaults_to_three_per_device() -> None:
    sched, worker = await make(max_loaded=0)
    for name in "abc":
        await run_to_end(await submit(sched, name))
    await run_to_end(await submit(sched, "d"))
    assert sorted(loaded(sched)) == ["b", "c", "d"]  # a: least recent


async def test_models_go_where_most_memory_is_free() -> None:
    sched, _ = await make(simulated("gpu:24G,gpu:24G,gpu:80G"))
    assert (await submit(sched, "a")).runner.worker.device.id == "cuda:2"
    sched, _ = await make(simulated("gpu:24G,gpu:24G"))
    placed = [(await submit(sched, name)).runner.worker.device.id for name in "abc"]
    assert placed == ["cuda:0", "cuda:1", "cuda:0"]


async def test_a_whole_model_on_a_gpu_offloads_every_layer_and_reports_its_vram() -> None:
    sched, _ = await make(simulated("gpu:24G"))
    job = await submit(sched, "a")
    [load] = FakeWorker.instances[0].loads
    assert load.n_gpu_layers == ALL_LAYERS
    assert job.runner.size_vram == job.runner.size - 4 * 1000  # one logits row stays in RAM


async def test_a_load_corrects_the_estimate_and_booking_with_the_weights_llama_cpp_reports() -> None:
    sched, _ = await make(simulated("gpu:24G"))
    model = ref("a", layers=2, layer_gb=0.25)
    FakeWorker.weights[model.path] = GB  # twice what the header said
    job = await submit(sched, model)
    assert job.runner.plan.estimate.weights_gpu == GB
    assert job.runner.plan.memory == {"cuda:0": job.runner.size_vram}


async def test_a_model_larger_than_any_gpu_is_split_by_a_worker_for_those_gpus() -> None:
    sched, _ = await make(simulated("gpu:24G,gpu:24G"))
    job = await submit(sched, ref("big", layers=40, layer_gb=1))
    group = job.runner.worker
    assert group.device.id == "cuda:0+cuda:1"
    assert [load.n_gpu_layers for load in group.loads] == [ALL_LAYERS]
    assert set(job.runner.plan.memory) == {"cuda:0", "cuda:1"}
    [split] = [load.tensor_split for load in group.loads]
    assert len(split) == 2 and sum(split) == pytest.approx(1.0)  # llama.cpp splits as planned
    await run_to_end(job)
    await sched.unload(job.runner.ref.digest)
    await settle()
    assert not group.alive  # the split's worker goes with its model


async def test_a_split_whose_worker_fails_to_start_fails_that_request_only(
        monkeypatch: pytest.MonkeyPatch) -> None:
    sched, _ = await make(simulated("gpu:24G,gpu:24G"))
    big = ref("big", layers=40, layer_gb=1)
    monkeypatch.setattr(FakeWorker, "failing_starts", {"cuda:0+cuda:1"})
    with pytest.raises(SchedulerError, match="worker did not start"):
        await submit(sched, big)
    monkeypatch.setattr(FakeWorker, "failing_starts", set())
    job = await submit(sched, big)  # not refused from then on, and a fresh worker for it
    assert job.runner.worker.device.id == "cuda:0+cuda:1" and job.runner.worker.alive


async def test_spread_splits_even_a_small_model_over_all_gpus() -> None:
    sched, _ = await make(simulated("gpu:24G,gpu:24G,gpu:24G"), spread=True)
    job = await submit(sched, "a")
    assert job.runner.worker.device.id == "cuda:0+cuda:1+cuda:2"


async def test_a_model_too_large_for_the_gpu_is_partly_offloaded() -> None:
    inventory = SimulatedInventory(simulated("gpu:8G").devices(), Device("cpu", "cpu", 64 * GB,
                                                                         64 * GB))
    sched, worker = await make(inventory)
    job = await submit(sched, ref("big", layers=20, layer_gb=1))
    [load] = worker.loads
    assert 0 < load.n_gpu_layers < 20
    assert job.runner.size_vram <= 8 * GB < job.runner.size


async def test_a_model_that_fits_nowhere_names_what_it_needs_and_what_is_free() -> None:
    inventory = SimulatedInventory(simulated("gpu:8G").devices(), Device("cpu", "cpu", 16 * GB,
                                                                         4 * GB))
    sched, worker = await make(inventory)
    with pytest.raises(SchedulerError, match=r"requires more memory than is free: 20\.0 GiB in "
                                             r"all \(free: cuda:0 8\.0 GiB, RAM 4\.0 GiB\)"):
        await submit(sched, ref("huge", layers=20, layer_gb=1))
    assert worker.loads == []


async def test_cpu_devices_share_the_cores() -> None:
    sched, _ = await make(simulated("cpu:8G,cpu:8G"), n_threads=8)
    assert [w.n_threads for w in FakeWorker.instances] == [4, 4]


# ---- replicas ---------------------------------------------------------------------------------

async def test_a_full_model_with_waiters_gets_a_replica_on_another_device() -> None:
    sched, _ = await make(simulated("cpu:8G,cpu:8G"))
    first = await submit(sched, "a")
    second = await submit(sched, "a")  # would time out waiting for the first slot
    assert first.runner is not second.runner
    assert {first.runner.worker.device.id, second.runner.worker.device.id} == {"cpu:0", "cpu:1"}


async def test_a_request_goes_to_the_replica_with_the_most_free_slots() -> None:
    sched, _ = await make(simulated("cpu:8G,cpu:8G"), slots=2)
    jobs = [await submit(sched, "a") for _ in range(3)]  # fills one, then a replica takes one
    busy, light = jobs[0].runner, jobs[2].runner
    assert busy is not light and (busy.refcount, light.refcount) == (2, 1)
    await run_to_end(jobs[0])
    nxt = await submit(sched, "a")
    assert nxt.runner in (busy, light) and (busy.refcount, light.refcount) in ((2, 1), (1, 2))


async def test_no_replica_beyond_max_replicas() -> None:
    sched, _ = await make(simulated("cpu:8G,cpu:8G"), max_replicas=1)
    await submit(sched, "a")
    waiting = asyncio.create_task(submit(sched, "a"))
    await settle()
    assert not waiting.done() and len(loaded(sched)) == 1
    waiting.cancel()


async def test_a_replica_evicts_nothing() -> None:
    sched, _ = await make(simulated("cpu:2G,cpu:2G"))
    await run_to_end(await submit(sched, "b"))  # on cpu:0; idle from now on
    await submit(sched, "a")  # on cpu:1, which has more room left
    waiting = asyncio.create_task(submit(sched, "a"))
    await settle()
    assert not waiting.done()  # cpu:0 has room only if b went: a replica is not worth that
    assert sorted(loaded(sched)) == ["a", "b"]
    waiting.cancel()


async def test_a_surplus_replica_is_unloaded_when_idle_and_the_last_one_stays() -> None:
    sched, _ = await make(simulated("cpu:8G,cpu:8G"), replica_idle=0.05)
    jobs = [await submit(sched, "a") for _ in range(2)]
    for job in jobs:
        await run_to_end(job)
    await asyncio.sleep(0.2)
    assert len(loaded(sched)) == 1


# ---- hangs --------------------------------------------------------------------------------------

def fast_watch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pings every 20 ms and a 0.1 s floor, so that a deadline from step times shows quickly."""
    monkeypatch.setattr(watchdog, "INTERVAL", 0.02)
    monkeypatch.setattr(watchdog, "FLOOR", 0.1)

async def test_a_worker_silent_past_its_step_deadline_is_killed_well_before_the_timeout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fast_watch(monkeypatch)
    sched, worker = await make(hang_timeout=300)
    job = await submit(sched, "a")
    worker.step(job.runner.model_id, duration_ns=100_000, tokens=1)  # 0.1 ms a token: fast
    worker.hung = True
    await asyncio.sleep(0.5)
    assert worker.killed
    await sched.stop()


async def test_a_busy_model_without_steps_yet_gets_the_full_timeout(
        monkeypatch: pytest.MonkeyPatch) -> None:
    fast_watch(monkeypatch)
    sched, worker = await make(hang_timeout=300)
    await submit(sched, "a")  # its first prompt may take long: no history to judge it by
    worker.hung = True
    await asyncio.sleep(0.5)
    assert not worker.killed
    await sched.stop()


async def test_loading_is_not_a_hang() -> None:
    sched, worker = await make(hang_timeout=0.1)
    worker.hold_loads = asyncio.Event()
    worker.hung = True  # a load blocks the step loop: no pongs meanwhile
    loading = asyncio.create_task(submit(sched, "a"))
    await asyncio.sleep(0.5)
    assert not worker.killed
    worker.hold_loads.set()
    await loading
    await sched.stop()


# ---- jobs ---------------------------------------------------------------------------------------

async def test_a_job_gives_started_then_chunks_then_done_and_then_ends() -> None:
    sched, worker = await make()
    job = await submit(sched, "a")
    for msg in (protocol.Started(job.id, 5, False), protocol.Chunk(job.id, "Hi", 1),
                protocol.Done(job.id, "stop", 5, 1, 1, 1)):
        worker.jobs[job.id].put_nowait(msg)
    async with job:
        events = [type(event).__name__ async for event in job]
    assert events == ["Started", "Chunk", "Done"]
    assert job.runner.refcount == 0 and "Cancel" not in worker.events


async def test_a_job_the_worker_fails_raises_naming_whose_fault_it_was() -> None:
    sched, worker = await make()
    job = await submit(sched, "a")
    worker.jobs[job.id].put_nowait(protocol.Failed(job.id, "input too long", "bad_request"))
    with pytest.raises(JobFailed, match="input too long") as failed:
        async with job:
            async for _ in job:
                pass
    assert failed.value.bad_request and job.runner.refcount == 0


async def test_a_job_frees_its_slot_once_however_often_it_is_closed() -> None:
    sched, _ = await make(slots=2)
    job = await submit(sched, "a")
    await run_to_end(job)
    job.close()
    async with job:
        pass
    assert job.runner.refcount == 0


async def test_an_embedding_gives_its_vectors_and_its_context_counts_in_the_size() -> None:
    sched, _ = await make()
    await sched.load(ref("a"), load_options(), None)
    [before] = sched.snapshot().runners
    result = await asyncio.wait_for(sched.embed(ref("a"), load_options(), None, ["x", "y"],
                                                truncate=True), 5)
    assert result.vectors == [[1.0], [1.0]] and result.prompt_eval_count == 3
    [after] = sched.snapshot().runners
    assert after.size == before.size + GB and after.refcount == 0


# ---- load options -------------------------------------------------------------------------------

@pytest.mark.parametrize("wanted,reloads", [
    ({}, False),
    ({"num_ctx": 8192}, True),
    ({"num_batch": 128}, True),
    ({"num_gpu": 2}, True),
    ({"main_gpu": 1}, True),
    ({"num_thread": 3}, True),
    ({"use_mmap": False}, True),
], ids=["the same options", "num_ctx", "num_batch", "num_gpu", "main_gpu", "num_thread",
        "use_mmap"])
def test_a_runner_needs_reloading_when_any_load_option_differs(wanted: dict[str, Any],
                                                                reloads: bool) -> None:
    assert needs_reload(load_options(), load_options(**wanted)) is reloads


def test_a_request_leaving_the_layers_to_the_fit_takes_the_runners_layers() -> None:
    assert not needs_reload(load_options(num_gpu=2), load_options(num_gpu=-1))
    assert needs_reload(load_options(num_gpu=-1), load_options(num_gpu=2))


async def test_the_load_options_travel_in_the_load_message() -> None:
    sched, worker = await make()
    await submit(sched, "a", num_batch=128, main_gpu=1, num_thread=3, use_mmap=False)
    [load] = worker.loads
    assert (load.num_batch, load.main_gpu, load.n_threads, load.use_mmap) == (128, 1, 3, False)


async def test_a_bigger_num_batch_is_booked_with_its_bigger_compute_buffer() -> None:
    sched, worker = await make(simulated("gpu:24G"))
    small = (await submit(sched, "a")).runner.plan.estimate
    big = (await submit(sched, "b", num_batch=2048)).runner.plan.estimate
    assert big.compute_gpu == 4 * small.compute_gpu  # its ubatch: 2048 tokens against 512
    assert [load.batch_tokens for load in worker.loads] == [512, 2048]


async def test_another_load_option_reloads_the_model_once_it_is_idle() -> None:
    sched, worker = await make()
    job = await submit(sched, "a")
    other = asyncio.create_task(submit(sched, "a", num_thread=2))
    await settle()
    assert not other.done()  # the running request keeps its runner
    await run_to_end(job)
    job2 = await asyncio.wait_for(other, 1)
    assert job2.runner is not job.runner and len(worker.loaded) == 1
    assert [load.n_threads for load in worker.loads] == [0, 2]


async def test_an_embedding_with_other_load_options_reloads_the_model_too() -> None:
    sched, worker = await make()
    await run_to_end(await submit(sched, "a"))
    await asyncio.wait_for(sched.embed(ref("a"), load_options(num_batch=64), None, ["x"], True), 5)
    assert [load.num_batch for load in worker.loads] == [512, 64] and len(worker.loaded) == 1


async def test_num_gpu_fixes_the_layers_offloaded() -> None:
    sched, worker = await make(simulated("gpu:24G"))
    job = await submit(sched, "a", num_gpu=2)
    [load] = worker.loads
    assert load.n_gpu_layers == 2 and 0 < job.runner.size_vram < job.runner.size


async def test_num_gpu_zero_keeps_every_layer_in_ram() -> None:
    sched, worker = await make(simulated("gpu:24G"))
    job = await submit(sched, "a", num_gpu=0)
    assert worker.loads[0].n_gpu_layers == 0 and job.runner.size_vram == 0


async def test_a_request_leaving_the_layers_to_the_fit_shares_a_runner_with_fixed_layers() -> None:
    sched, worker = await make(simulated("gpu:24G"), slots=2)
    first = await submit(sched, "a", num_gpu=2)
    second = await submit(sched, "a")
    assert second.runner is first.runner and len(worker.loads) == 1


# ---- the snapshot -------------------------------------------------------------------------------

async def test_the_snapshot_shows_each_loaded_runner_and_the_waiting_requests() -> None:
    sched, worker = await make(simulated("gpu:24G"), slots=1)
    job = await submit(sched, "a", num_ctx=2048)
    worker.step(job.runner.model_id, duration_ns=1000, tokens=1, kv_used=100)
    waiting = asyncio.create_task(submit(sched, "a"))
    await settle()
    snap = sched.snapshot()
    [state] = snap.runners
    assert (state.name, state.context_length, state.devices, state.slots, state.refcount) == \
        ("a", 2048, ("cuda:0",), 1, 1)
    assert (state.kv_used, state.kv_cells, state.size_vram) == (100, 4096, job.runner.size_vram)
    assert snap.waiting == 1 and snap.worker_restarts == 0
    waiting.cancel()


async def test_a_runner_that_has_not_stepped_yet_shows_none_of_its_kv_cells_in_use() -> None:
    sched, _ = await make(slots=2)
    job = await submit(sched, "a", num_ctx=1024)
    [state] = sched.snapshot().runners
    assert (state.kv_used, state.kv_cells) == (0, job.runner.kv_cells) and state.kv_cells == 2048


async def test_the_snapshot_counts_workers_that_died_and_were_replaced(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pool, "RESTART_DELAY", 0.01)
    sched, worker = await make()
    worker.alive = False
    worker.on_exit(worker)
    assert sched.snapshot().worker_restarts == 1
    await sched.stop()

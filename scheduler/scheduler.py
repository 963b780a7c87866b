"""Policy: which worker runs a job, when models load and unload, how many requests may wait.

Runs in the front-end process on the event loop. A `Runner` is one model loaded on one worker
with `slots` sequences; a model may have several runners on different devices (replicas). A job
holds one slot from dispatch until its final message. Requests that find no free slot wait, at
most `max_queue` of them in all (more get 503), in one line per model: only the first in its
model's line takes a slot or starts a load, so nobody overtakes an earlier request for the same
model, and a busy model's line never holds up another model's requests.

When every replica of a model is full and requests wait, another replica is loaded on a device
with free memory (no eviction for it), up to `max_replicas`; each request goes to the replica
with the most free slots; a replica left idle while another remains is unloaded after
`replica_idle` seconds. An idle runner unloads when its keep-alive expires, or earlier when
placement needs its memory. A model no single GPU holds is split over GPUs by a worker started
for those GPUs, or partly offloaded.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Callable, Sequence

from scheduler import memory, placement, watchdog
from scheduler.devices import Device, Inventory
from scheduler.memory import Estimate, ModelMemory
from scheduler.worker import CRASH_MESSAGE, WorkerDied, WorkerHandle
from workers import protocol
from workers.options import RequestOptions

log = logging.getLogger("corral.scheduler")

RESTART_DELAY = 1.0
ALL_LAYERS = 999  # n_gpu_layers past any model's layer count: llama.cpp offloads everything


class SchedulerError(RuntimeError):
    """A failure to report as HTTP 500 (load failure, crashed worker, a model that fits nowhere)."""


class QueueFull(RuntimeError):
    pass


@dataclass(frozen=True)
class Config:
    slots: int = 0  # OLLAMA_NUM_PARALLEL; 0 = sized by memory (placement.kv_plan)
    max_queue: int = 512
    max_loaded: int = 0  # OLLAMA_MAX_LOADED_MODELS: runners in all; 0 = 3 per device
    max_replicas: int = 0  # CORRAL_MAX_REPLICAS: runners per model; 0 = one per device
    keep_alive: float = 300.0
    spread: bool = False  # OLLAMA_SCHED_SPREAD: split every model over all GPUs
    gpu_overhead: int = 0  # OLLAMA_GPU_OVERHEAD: bytes left free on every GPU
    hang_timeout: float | None = None  # CORRAL_WORKER_TIMEOUT; None: no watchdog
    replica_idle: float = 10.0  # seconds a surplus replica may sit idle
    batch_invariant: bool = False
    n_threads: int = 1
    debug: bool = False


@dataclass(frozen=True)
class ModelRef:
    """What the scheduler needs to know about a stored model; built by the front end."""

    name: str  # display name, e.g. "gemma3:270m"
    digest: str  # weights blob digest: identifies the model
    manifest_digest: str  # what /api/ps shows as "digest"
    path: str
    memory: ModelMemory
    context_length: int  # trained context length from the GGUF (0 if unknown)
    n_vocab: int  # tokenizer vocabulary size from the GGUF (0 if unknown)
    details: dict
    adapters: tuple[str, ...] = ()  # LoRA adapter files applied on top of the weights


@dataclass(frozen=True)
class Plan:
    """Where a new runner goes and what it will hold there."""

    devices: tuple[str, ...]  # one, or the GPUs of a split
    evict: tuple[str, ...]
    estimate: Estimate
    n_gpu_layers: int
    memory: dict[str, int]  # bytes booked on each device
    shares: tuple[float, ...] = ()  # a split: each GPU's part of the layers (tensor_split)

    def with_weights(self, actual: int) -> Plan:
        """The plan with the weights llama.cpp reports having loaded, the bookings scaled alike."""
        estimate = self.estimate.with_weights(actual)
        before, after = ((self.estimate.vram, estimate.vram) if self.n_gpu_layers
                         else (self.estimate.total, estimate.total))
        memory = {d: held * after // max(1, before) for d, held in self.memory.items()}
        return replace(self, estimate=estimate, memory=memory)


@dataclass(eq=False)
class Runner:
    ref: ModelRef
    model_id: str
    num_ctx: int  # per sequence
    slots: int  # sequences at once
    kv_cells: int  # KV cache size, shared by the slots
    worker: WorkerHandle
    ready: asyncio.Future[None]
    keep_alive: float
    plan: Plan
    active: int = 0
    embeds: int = 0  # active jobs that are embeddings (they send no Step messages)
    draining: bool = False  # takes no new jobs: waiting to be replaced or unloaded
    embed_size: int = 0  # the embedding context, once one was used
    last_used: float = field(default_factory=time.monotonic)
    expires_at: float = 0.0  # wall clock, for /api/ps
    expiry: asyncio.TimerHandle | None = None

    @property
    def size(self) -> int:
        return self.plan.estimate.total

    @property
    def size_vram(self) -> int:
        return self.plan.estimate.vram


@dataclass
class Job:
    """One request's hold on a runner slot; `next()` gives Chunks, then Done or Failed."""

    id: int
    runner: Runner
    load_duration: int
    _scheduler: "Scheduler"
    _queue: asyncio.Queue[protocol.FromWorker] | None = None
    finished: bool = False

    async def next(self) -> protocol.FromWorker:
        """The next message: Started, Chunks, then the final Done, Embedded or Failed (which
        frees the slot)."""
        assert self._queue is not None
        msg = await self._queue.get()
        if not isinstance(msg, (protocol.Chunk, protocol.Started)):
            self.finished = True
            self._scheduler._release(self)
        return msg

    def close(self) -> None:
        """Ends the job early (client gone) or confirms its end; frees the slot once."""
        if not self.finished:
            self.finished = True
            try:
                self.runner.worker.send(protocol.Cancel(self.id))
            except WorkerDied:
                pass
            self._scheduler._release(self)


class Scheduler:
    def __init__(self, inventory: Inventory, config: Config,
                 worker_factory: Callable[..., WorkerHandle] = WorkerHandle) -> None:
        self._inventory = inventory
        self._config = config
        self._new_worker = worker_factory  # tests pass a fake that needs no llama.cpp
        self._workers: dict[str, WorkerHandle] = {}  # one per device, by device id
        self._groups: dict[str, WorkerHandle] = {}  # started for a split, by "cuda:0+cuda:1"
        self._group_starts: dict[str, asyncio.Future[None]] = {}  # each group's start, once
        self._runners: dict[str, list[Runner]] = {}  # by weights digest: the replicas
        self._lines: dict[str, deque[int]] = {}  # by weights digest: waiting tickets in order
        self._changed = asyncio.Condition()
        self._waiting = 0
        self._ids = itertools.count(1)
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._crashed_loads: set[str] = set()  # weights digests whose load killed a worker
        self._no_replicas: set[str] = set()  # digests whose replica failed to load
        self._max_loaded = config.max_loaded
        self._max_replicas = config.max_replicas
        self.worker_restarts = 0  # workers that died or were killed and replaced

    # ---- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        devices = self._inventory.devices()
        self._max_loaded = self._config.max_loaded or placement.auto_max_loaded(devices)
        self._max_replicas = self._config.max_replicas or len(devices)
        handles = [self._spawn_worker(d) for d in devices]
        await asyncio.gather(*(h.start() for h in handles))
        self._workers = {h.device.id: h for h in handles}
        for handle in handles:
            self._guard(handle)

    def _spawn_worker(self, device: Device) -> WorkerHandle:
        # CPU devices (several only in a simulated inventory) share the cores.
        cpus = sum(1 for d in self._inventory.devices() if not d.is_gpu)
        threads = self._config.n_threads if device.is_gpu else self._config.n_threads // max(1, cpus)
        return self._new_worker(device, max(1, threads), self._config.debug, self._worker_exited)

    def _guard(self, worker: WorkerHandle) -> None:
        if self._config.hang_timeout is not None:
            self._spawn(self._watch(worker, self._config.hang_timeout))

    async def _watch(self, worker: WorkerHandle, ceiling: float) -> None:
        """Kills a worker that goes silent (stopped, deadlocked, stuck in a native call) for
        longer than its deadline (scheduler/watchdog.py) while a ping waits: its requests then
        end with the runner-stopped error and a new worker starts. Loading is not a hang."""
        interval = min(watchdog.INTERVAL, ceiling / 4)
        while worker.alive and not self._stopping:
            ping = asyncio.ensure_future(worker.request(protocol.Ping(next(self._ids))))
            sent = time.monotonic()
            try:
                while not ping.done():
                    await asyncio.wait([ping], timeout=interval)
                    silent = time.monotonic() - max(sent, worker.last_heard)
                    if (not ping.done() and silent > self._deadline(worker, ceiling)
                            and not self._loading_on(worker) and not self._stopping):
                        log.error("worker %s has been silent for %.1fs: restarting it",
                                  worker.device.id, silent)
                        worker.kill()
                        return
                if ping.exception() is not None:
                    return  # the worker died; its replacement gets its own watch
            finally:
                ping.cancel()
            await asyncio.sleep(interval)

    def _deadline(self, worker: WorkerHandle, ceiling: float) -> float:
        busy = [r for r in self._all_runners() if r.worker is worker and r.active]
        if any(r.embeds for r in busy):
            return ceiling  # an embedding batch sends no steps to judge it by
        return watchdog.silence_deadline(
            [tuple(worker.step_times.get(r.model_id, ())) for r in busy], ceiling)

    def _loading_on(self, worker: WorkerHandle) -> bool:
        # Loading weights blocks the step loop for as long as it takes: not a hang.
        return any(r.worker is worker and not r.ready.done() for r in self._all_runners())

    async def stop_admitting(self) -> None:
        """New and queued requests fail from now on; running jobs go on."""
        self._stopping = True
        await self._notify()

    async def stop(self) -> None:
        """Stops every worker (after the HTTP side has let running requests finish)."""
        self._stopping = True
        for task in list(self._tasks):
            task.cancel()
        for runner in self._all_runners():
            if runner.expiry:
                runner.expiry.cancel()
        workers = [*self._workers.values(), *self._groups.values()]
        await asyncio.gather(*(w.stop() for w in workers))

    def _worker_exited(self, worker: WorkerHandle) -> None:
        if not self._stopping:
            self.worker_restarts += 1
        group = self._groups.get(worker.device.id) is worker
        for runner in [r for r in self._all_runners() if r.worker is worker]:
            others_ready = any(r is not runner and r.ready.done()
                               for r in self._runners.get(runner.ref.digest, []))
            # It died loading this model; loading it again would crash it again. (A split's
            # worker may as well have died starting up, or of the split: not held against it.)
            if not runner.ready.done() and not others_ready and not group:
                log.error("%s crashed its worker while loading; refusing it from now on",
                          runner.ref.name)
                self._crashed_loads.add(runner.ref.digest)
            self._drop(runner)
        if group:
            self._forget_group(worker)  # started for a split: not restarted
        elif not self._stopping:
            self._spawn(self._restart(worker))
        self._spawn(self._notify())

    async def _restart(self, old: WorkerHandle) -> None:
        await asyncio.sleep(RESTART_DELAY)
        while not self._stopping:
            if all(d.id != old.device.id for d in self._inventory.devices()):
                # Its node left the cluster (scheduler/ray_cluster.py): its models load on the
                # devices that remain when next asked for.
                log.warning("device %s is gone: its worker is not restarted", old.device.id)
                self._workers.pop(old.device.id, None)
                await self._notify()
                return
            handle = self._spawn_worker(old.device)
            try:
                await handle.start()
            except (WorkerDied, asyncio.TimeoutError) as exc:
                log.error("restarting worker %s failed: %s", old.device.id, exc)
                await handle.stop()
                await asyncio.sleep(RESTART_DELAY * 5)
                continue
            self._workers[old.device.id] = handle
            self._guard(handle)
            await self._notify()
            return

    def _spawn(self, coro) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- public API ----------------------------------------------------------------------

    async def submit(self, ref: ModelRef, num_ctx: int, keep_alive: float | None,
                     prompt: protocol.PromptSpec, options: RequestOptions,
                     want_context: bool, output_format: protocol.OutputFormat = None) -> Job:
        job = await self._acquire(ref, num_ctx, keep_alive)
        self._start(job, protocol.Submit(job.id, job.runner.model_id, prompt, options, want_context,
                                         output_format))
        return job

    async def embed(self, ref: ModelRef, num_ctx: int, keep_alive: float | None,
                    inputs: list[str | list[int]],
                    truncate: bool) -> tuple[protocol.FromWorker, int]:
        """(Embedded or Failed, load duration in ns)."""
        job = await self._acquire(ref, num_ctx, keep_alive)
        runner = job.runner
        runner.embeds += 1
        try:
            self._start(job, protocol.Embed(job.id, runner.model_id, inputs, truncate))
            reply = await job.next()
        finally:
            runner.embeds -= 1
            job.close()
        if isinstance(reply, protocol.Embedded):
            runner.embed_size = reply.memory
        return reply, job.load_duration

    def _start(self, job: Job, msg: protocol.Submit | protocol.Embed) -> None:
        job._queue = job.runner.worker.open_job(job.id)
        try:
            job.runner.worker.send(msg)
        except BaseException as exc:
            # Whatever failed (a dead worker, a message that cannot be encoded, a cancelled
            # task), the slot must come back, or the model wedges once every slot has leaked.
            job.finished = True
            self._release(job)
            if isinstance(exc, WorkerDied):
                raise SchedulerError(CRASH_MESSAGE) from None
            raise

    async def load(self, ref: ModelRef, num_ctx: int, keep_alive: float | None) -> int:
        """Loads (or keeps) the model and returns the load duration; holds no slot after."""
        job = await self._acquire(ref, num_ctx, keep_alive)
        job.finished = True
        self._release(job)
        return job.load_duration

    async def unload(self, digest: str) -> None:
        """Unloads every replica now if idle, else as soon as its last running job ends."""
        for runner in list(self._runners.get(digest, [])):
            runner.keep_alive = 0
            runner.draining = True
            if runner.active == 0:
                await self._unload(runner)

    async def probe(self, timeout: float) -> dict[str, str]:
        """Each worker's state: "ready", "loading", "not responding" (a stopped or hung
        process: no answer to a ping within `timeout`) or "restarting"."""
        async def state(worker: WorkerHandle) -> str:
            if not worker.alive:
                return "restarting"
            try:
                await asyncio.wait_for(worker.request(protocol.Ping(next(self._ids))), timeout)
            except asyncio.TimeoutError:
                return "loading" if self._loading_on(worker) else "not responding"
            except WorkerDied:
                return "restarting"
            return "ready"

        workers = {**self._workers, **self._groups}
        states = await asyncio.gather(*(state(w) for w in workers.values()))
        return dict(zip(workers, states))

    @property
    def queued(self) -> int:
        """Requests waiting for a slot (or for their model to load)."""
        return self._waiting

    def devices(self) -> list[Device]:
        return self._inventory.devices()

    def running(self) -> list[Runner]:
        """Loaded runners, replicas each on their own."""
        return [r for r in self._all_runners() if r.ready.done() and not r.ready.exception()]

    def _all_runners(self) -> list[Runner]:
        return [r for replicas in self._runners.values() for r in replicas]

    # ---- slots ---------------------------------------------------------------------------

    async def _acquire(self, ref: ModelRef, num_ctx: int, keep_alive: float | None) -> Job:
        if self._waiting >= self._config.max_queue:
            raise QueueFull()
        ticket = next(self._ids)
        line = self._lines.setdefault(ref.digest, deque())
        line.append(ticket)
        self._waiting += 1
        started = time.perf_counter_ns()
        try:
            while True:
                if self._stopping:
                    raise SchedulerError("server is shutting down")
                if ref.digest in self._crashed_loads:
                    raise SchedulerError(f"unable to load model {ref.name}: loading it crashed "
                                         "the model runner (a damaged or unsupported file?)")
                first = self._first_load(ref.digest)
                if first is not None:  # every waiter shares the outcome of a model's first load
                    await self._loaded(first)
                    continue
                if line[0] == ticket:
                    runner = await self._admit(ref, num_ctx, keep_alive, len(line))
                    if runner is not None:
                        break
                    if self._first_load(ref.digest) is not None:
                        continue  # it just started: share its outcome
                await self._wait_for_change()
        finally:
            line.remove(ticket)
            if not line:
                del self._lines[ref.digest]
            self._waiting -= 1
            self._spawn(self._notify())  # the next in line may take a slot now
        runner.active += 1
        runner.ref = ref  # names sharing these weights share the runner; /api/ps shows the latest
        runner.keep_alive = self._config.keep_alive if keep_alive is None else keep_alive
        runner.expires_at = time.time() + min(runner.keep_alive, 1e10)
        if runner.expiry is not None:
            runner.expiry.cancel()
            runner.expiry = None
        return Job(next(self._ids), runner, time.perf_counter_ns() - started, self)

    def _first_load(self, digest: str) -> Runner | None:
        """The model's only runner while it is still loading."""
        replicas = self._runners.get(digest, [])
        if len(replicas) == 1 and not replicas[0].ready.done():
            return replicas[0]
        return None

    @staticmethod
    async def _loaded(runner: Runner) -> None:
        try:
            await asyncio.shield(runner.ready)
        except SchedulerError as exc:
            raise SchedulerError(str(exc)) from None

    async def _admit(self, ref: ModelRef, num_ctx: int, keep_alive: float | None,
                     waiting: int) -> Runner | None:
        """A runner with a free slot for the first request in the model's line, or None after
        starting what will make one (a load, a replica), or when it must wait."""
        replicas = self._runners.get(ref.digest, [])
        for runner in list(replicas):
            if runner.num_ctx != num_ctx and not runner.draining:
                runner.draining = True  # same weights, other context size: replace when idle
                if runner.active == 0 and runner.ready.done():
                    await self._unload(runner)
        if any(r.draining for r in replicas):
            return None  # a fresh load once they are gone (their memory is needed)
        states = [placement.Replica(r.slots - r.active, r.ready.done() and r.worker.alive)
                  for r in replicas]
        pick = placement.pick_replica(states)
        if pick is not None:
            return replicas[pick]
        if not replicas:
            self._load_new(ref, num_ctx, keep_alive, replica=False)
        elif ref.digest not in self._no_replicas and placement.want_replica(
                states, waiting, self._max_replicas):
            self._load_new(ref, num_ctx, keep_alive, replica=True)
        return None

    def _release(self, job: Job) -> None:
        runner = job.runner
        runner.worker.close_job(job.id)
        runner.active -= 1
        runner.last_used = time.monotonic()
        runner.expires_at = time.time() + min(runner.keep_alive, 1e10)
        if runner.active == 0 and self._holds(runner):
            if runner.draining or runner.keep_alive <= 0:
                self._spawn(self._unload(runner))
            else:
                self._arm_expiry(runner)
        self._spawn(self._notify())

    def _arm_expiry(self, runner: Runner) -> None:
        """Unloads an idle runner at its keep-alive, or sooner when it is a surplus replica."""
        delay = runner.keep_alive - (time.monotonic() - runner.last_used)
        if self._surplus(runner):
            delay = min(delay, self._config.replica_idle)
        if math.isfinite(delay):
            runner.expiry = asyncio.get_running_loop().call_later(
                max(0.0, delay), lambda: self._spawn(self._expire(runner)))

    def _surplus(self, runner: Runner) -> bool:
        return any(r is not runner and not r.draining and r.ready.done()
                   for r in self._runners.get(runner.ref.digest, []))

    async def _expire(self, runner: Runner) -> None:
        runner.expiry = None
        if runner.active or not self._holds(runner):
            return
        if self._surplus(runner):
            log.info("unloading an idle replica of %s", runner.ref.name)
        elif time.monotonic() - runner.last_used < runner.keep_alive:
            self._arm_expiry(runner)  # the last replica stays for its keep-alive
            return
        else:
            log.info("keep-alive expired for %s", runner.ref.name)
        await self._unload(runner)

    def _holds(self, runner: Runner) -> bool:
        return any(r is runner for r in self._runners.get(runner.ref.digest, []))

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _wait_for_change(self) -> None:
        async with self._changed:
            await self._changed.wait()

    # ---- placement -----------------------------------------------------------------------

    def _plan(self, ref: ModelRef, slots: int, kv_cells: int, replica: bool) -> Plan | None:
        """Where a new runner goes; None: not now (wait, or no replica). Raises when the model
        fits nowhere. Decided only while every device's worker is up: with one restarting, a
        model might look too large, or a split or an offload might be chosen that is not needed."""
        flash = not self._config.batch_invariant
        gpu = memory.estimate(ref.memory, kv_cells, slots, ref.memory.all_layers, flash)
        cpu = memory.estimate(ref.memory, kv_cells, slots, 0, flash)
        need = placement.Need(gpu.vram, cpu.total, split_overhead=gpu.compute_gpu)
        devices = self._inventory.devices()
        if not all(d.id in self._workers and self._workers[d.id].alive for d in devices):
            return None  # a worker is restarting: decide with every device in view
        loaded = self._books()
        limits = placement.Limits(self._max_loaded, self._config.gpu_overhead)

        def whole(decision: placement.Placement) -> Plan:
            [device] = [d for d in devices if d.id == decision.device_id]
            est, layers = (gpu, ALL_LAYERS) if self._offloads(device) else (cpu, 0)
            return Plan(decision.devices, decision.evict, est, layers,
                        {device.id: est.vram if layers else est.total})

        if replica:
            taken = frozenset(d for r in self._runners.get(ref.digest, []) for d in r.plan.devices)
            decision = placement.place(devices, loaded, need, limits, exclude=taken, evict=False)
            return whole(decision) if decision.devices else None
        gpus = sum(1 for d in devices if self._offloads(d))
        if not (self._config.spread and gpus > 1):
            decision = placement.place(devices, loaded, need, limits)
            if decision.devices:
                return whole(decision)
            if not decision.never_fits:
                return None
        if gpus > 1:
            split = placement.place_split([d for d in devices if self._offloads(d)], loaded,
                                          need, limits, spread=self._config.spread)
            if split.devices:
                return Plan(split.devices, split.evict, gpu, ALL_LAYERS,
                            _shared(gpu.vram, gpu.compute_gpu, split.devices, split.shares),
                            split.shares)
            if not split.never_fits:
                return None
        return self._partial(ref, slots, kv_cells, devices, loaded, limits, cpu)

    def _partial(self, ref: ModelRef, slots: int, kv_cells: int, devices: Sequence[Device],
                 loaded: list[placement.LoadedModel], limits: placement.Limits,
                 cpu: Estimate) -> Plan | None:
        """As many layers as the GPU with the most free memory holds, the rest in RAM; or the
        error naming what the model needs and what is free."""
        host = self._inventory.host()
        free = {d.id: placement.free_memory(d, loaded, limits.gpu_overhead) for d in devices}
        gpus = [d for d in devices if self._offloads(d)]
        if gpus:
            flash = not self._config.batch_invariant
            layers = memory.fit_layers(ref.memory, kv_cells, slots, max(free[d.id] for d in gpus),
                                       flash)
            est = memory.estimate(ref.memory, kv_cells, slots, layers, flash)
            if est.ram <= host.free_memory:
                decision = placement.place(gpus, loaded, placement.Need(est.vram, est.total),
                                           limits)
                if not decision.devices:
                    return None  # the model limit: wait for a model to go idle
                log.info("%s: %d of %d layers fit on %s, the rest stays in RAM", ref.name,
                         layers, ref.memory.all_layers, decision.device_id)
                return Plan(decision.devices, decision.evict, est, layers,
                            {decision.devices[0]: est.vram})
        where = ", ".join([f"{d.id} {_gib(free[d.id])}" for d in devices]
                          + ([f"RAM {_gib(host.free_memory)}"] if gpus else []))
        raise SchedulerError(f"model requires more memory than is free: {_gib(cpu.total)} in "
                             f"all (free: {where})")

    def _offloads(self, device: Device) -> bool:
        return device.is_gpu and self._workers[device.id].gpu_offload

    def _books(self) -> list[placement.LoadedModel]:
        return [placement.LoadedModel(r.model_id, r.ref.digest, r.plan.memory,
                                      r.active == 0 and r.ready.done(), r.last_used,
                                      loading=not r.ready.done())
                for r in self._all_runners()]

    # ---- loading -------------------------------------------------------------------------

    def _load_new(self, ref: ModelRef, num_ctx: int, keep_alive: float | None,
                  replica: bool) -> None:
        """Books a new runner where `_plan` puts it and starts loading it in the background."""
        slots, kv_cells = placement.kv_plan(num_ctx, self._config.slots,
                                            self._config.batch_invariant)
        plan = self._plan(ref, slots, kv_cells, replica)
        if plan is None:
            return
        victims = [r for r in self._all_runners() if r.model_id in plan.evict]
        for victim in victims:
            log.info("evicting %s to make room for %s", victim.ref.name, ref.name)
            self._drop(victim)
        worker = self._worker_for(plan.devices)
        runner = Runner(ref=ref, model_id=f"{ref.digest[7:19]}-{next(self._ids)}", num_ctx=num_ctx,
                        slots=slots, kv_cells=kv_cells, worker=worker,
                        ready=asyncio.get_running_loop().create_future(),
                        keep_alive=self._config.keep_alive if keep_alive is None else keep_alive,
                        plan=plan)
        self._runners.setdefault(ref.digest, []).append(runner)
        log.info("loading %s%s on %s: %s estimated (%s on the GPU)", ref.name,
                 " (replica)" if replica else "", worker.device.id, _gib(plan.estimate.total),
                 _gib(plan.estimate.vram))
        self._spawn(self._load(runner, victims))
        self._spawn(self._notify())  # waiters for this model now wait for this load

    def _worker_for(self, devices: tuple[str, ...]) -> WorkerHandle:
        if len(devices) == 1:
            return self._workers[devices[0]]
        group_id = "+".join(devices)
        if group_id not in self._groups:
            members = [self._workers[d].device for d in devices]
            group = Device(group_id, f"split over {', '.join(devices)}",
                           sum(d.total_memory for d in members), sum(d.free_memory for d in members),
                           {"CUDA_VISIBLE_DEVICES": ",".join(d.env.get("CUDA_VISIBLE_DEVICES", "")
                                                             for d in members)})
            handle = self._spawn_worker(group)
            self._groups[group_id] = handle
            self._group_starts[group_id] = asyncio.ensure_future(self._start_group(handle))
        return self._groups[group_id]

    async def _start_group(self, worker: WorkerHandle) -> None:
        try:
            await worker.start()
        except BaseException:
            await worker.stop()  # a start that timed out leaves a process behind
            raise
        self._guard(worker)

    async def _load(self, runner: Runner, victims: Sequence[Runner]) -> None:
        # Their memory must be free before llama.cpp allocates, whichever worker holds them.
        await asyncio.gather(*(self._send_unload(v) for v in victims))
        try:
            starting = self._group_starts.get(runner.worker.device.id)
            if starting is not None:  # a split's worker, started on demand
                await asyncio.shield(starting)
            reply = await runner.worker.request(protocol.Load(
                runner.model_id, runner.ref.path, runner.num_ctx, runner.slots,
                runner.plan.n_gpu_layers, list(runner.ref.adapters), runner.kv_cells,
                self._config.batch_invariant, list(runner.plan.shares)))
        except (WorkerDied, asyncio.TimeoutError) as exc:
            reply = protocol.LoadFailed(runner.model_id, str(exc) or "worker did not start")
        if runner.ready.done():
            pass  # the worker died meanwhile and _drop has already failed this load
        elif isinstance(reply, protocol.Loaded):
            log.info("loaded %s on %s in %.2fs", runner.ref.name, runner.worker.device.id,
                     reply.load_duration / 1e9)
            runner.plan = runner.plan.with_weights(reply.weights_size)
            runner.ready.set_result(None)
            if runner.active == 0 and len(self._runners[runner.ref.digest]) > 1:
                self._arm_expiry(runner)  # a replica nobody ended up needing
        else:
            message = reply.message if isinstance(reply, protocol.LoadFailed) else "load failed"
            log.error("loading %s failed: %s", runner.ref.name, message)
            if len(self._runners.get(runner.ref.digest, [])) > 1:
                self._no_replicas.add(runner.ref.digest)  # the first runner still serves
            runner.ready.set_exception(SchedulerError(f"unable to load model: {message}"))
            runner.ready.exception()  # mark retrieved: waiters re-raise it themselves
            if self._holds(runner):
                self._runners[runner.ref.digest].remove(runner)
                self._forget_if_empty(runner.ref.digest)
            await self._retire_group(runner.worker)
        await self._notify()

    async def _unload(self, runner: Runner) -> None:
        if not self._holds(runner):
            return
        self._drop(runner)
        await self._send_unload(runner)
        await self._notify()

    async def _send_unload(self, runner: Runner) -> None:
        if runner.worker.alive:
            try:
                await runner.worker.request(protocol.Unload(runner.model_id))
            except WorkerDied:
                pass
        log.info("unloaded %s from %s", runner.ref.name, runner.worker.device.id)
        await self._retire_group(runner.worker)

    async def _retire_group(self, worker: WorkerHandle) -> None:
        """Stops a split's worker once it holds no model."""
        if (self._groups.get(worker.device.id) is worker
                and not any(r.worker is worker for r in self._all_runners())):
            self._forget_group(worker)
            await worker.stop()

    def _forget_group(self, worker: WorkerHandle) -> None:
        del self._groups[worker.device.id]
        self._group_starts.pop(worker.device.id, None)

    def _drop(self, runner: Runner) -> None:
        replicas = self._runners.get(runner.ref.digest, [])
        if runner in replicas:
            replicas.remove(runner)
        self._forget_if_empty(runner.ref.digest)
        if runner.expiry is not None:
            runner.expiry.cancel()
        if not runner.ready.done():
            runner.ready.set_exception(SchedulerError(CRASH_MESSAGE))
            runner.ready.exception()

    def _forget_if_empty(self, digest: str) -> None:
        if not self._runners.get(digest):
            self._runners.pop(digest, None)
            self._no_replicas.discard(digest)


def _shared(vram: int, per_gpu: int, devices: Sequence[str],
            shares: Sequence[float]) -> dict[str, int]:
    """A split's bytes on each GPU: its share of the layers, and a compute buffer on each GPU
    past the first (the first's is in `vram` already)."""
    spread = vram + per_gpu * (len(devices) - 1)
    return {d: round(spread * s) for d, s in zip(devices, shares)}


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB"

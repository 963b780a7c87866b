"""Policy: which worker runs a job, when models load and unload, how many requests may wait.

Runs in the front-end process on the event loop. A `Runner` is one model loaded on one worker
with `slots` sequences; a job holds one slot from dispatch until its final message. Requests that
find no free slot wait (at most `max_queue` of them; more get 503). An idle runner unloads when
its keep-alive expires, or earlier when placement needs its memory.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Callable

from scheduler import placement
from scheduler.devices import Device, Inventory
from scheduler.worker import CRASH_MESSAGE, WorkerDied, WorkerHandle
from workers import protocol
from workers.options import RequestOptions

log = logging.getLogger("corral.scheduler")

RESTART_DELAY = 1.0


class SchedulerError(RuntimeError):
    """A failure to report as HTTP 500 (load failure, crashed worker)."""


class QueueFull(RuntimeError):
    pass


@dataclass(frozen=True)
class ModelRef:
    """What the scheduler needs to know about a stored model; built by the front end."""

    name: str  # display name, e.g. "gemma3:270m"
    digest: str  # weights blob digest: identifies the model
    manifest_digest: str  # what /api/ps shows as "digest"
    path: str
    file_size: int
    kv_bytes_per_token: int
    context_length: int  # trained context length from the GGUF (0 if unknown)
    n_vocab: int  # tokenizer vocabulary size from the GGUF (0 if unknown)
    details: dict
    adapters: tuple[str, ...] = ()  # LoRA adapter files applied on top of the weights


@dataclass
class Runner:
    ref: ModelRef
    model_id: str
    num_ctx: int  # per sequence
    slots: int  # sequences at once
    kv_cells: int  # KV cache size, shared by the slots
    worker: WorkerHandle
    ready: asyncio.Future[None]
    keep_alive: float
    active: int = 0
    draining: bool = False  # takes no new jobs: waiting to be replaced or unloaded
    size: int = 0  # weights and KV cache
    size_vram: int = 0
    embed_size: int = 0  # the embedding context, once one was used
    last_used: float = field(default_factory=time.monotonic)
    expires_at: float = 0.0  # wall clock, for /api/ps
    expiry: asyncio.TimerHandle | None = None


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
        """The next message: Chunk, or the final Done, Embedded or Failed (which frees the slot)."""
        assert self._queue is not None
        msg = await self._queue.get()
        if not isinstance(msg, protocol.Chunk):
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
    def __init__(self, inventory: Inventory, *, slots: int, max_queue: int,
                 max_loaded_per_device: int, default_keep_alive: float, n_threads: int,
                 debug: bool = False, hang_timeout: float | None = None,
                 batch_invariant: bool = False,
                 worker_factory: Callable[..., WorkerHandle] = WorkerHandle) -> None:
        self._inventory = inventory
        self._new_worker = worker_factory  # tests pass a fake that needs no llama.cpp
        self._slots = slots  # OLLAMA_NUM_PARALLEL; 0 = sized by memory (placement.kv_plan)
        self._batch_invariant = batch_invariant
        self._max_queue = max_queue
        self._max_loaded = max_loaded_per_device
        self._default_keep_alive = default_keep_alive
        self._n_threads = n_threads
        self._debug = debug
        self._hang_timeout = hang_timeout  # None: no watchdog
        self._watchdog: asyncio.Task[None] | None = None
        self._workers: dict[str, WorkerHandle] = {}
        self._runners: dict[str, Runner] = {}  # by weights digest
        self._changed = asyncio.Condition()
        self._waiting = 0
        self._ids = itertools.count(1)
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._crashed_loads: set[str] = set()  # weights digests whose load killed a worker
        self.worker_restarts = 0  # workers that died or were killed and replaced

    # ---- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        devices = self._inventory.devices()
        handles = [self._new_worker(d, self._n_threads, self._debug, self._worker_exited)
                   for d in devices]
        await asyncio.gather(*(h.start() for h in handles))
        self._workers = {h.device.id: h for h in handles}
        if self._hang_timeout is not None:
            self._watchdog = asyncio.get_running_loop().create_task(
                self._watch(self._hang_timeout))

    async def _watch(self, timeout: float) -> None:
        """Kills a worker whose step loop stops answering pings (stopped, deadlocked, stuck in
        a native call): its requests then end with the runner-stopped error and a new worker
        starts, instead of every request on it waiting forever."""
        while not self._stopping:
            await asyncio.sleep(timeout / 4)
            for device, state in (await self.probe(timeout)).items():
                if state == "not responding" and not self._stopping:
                    log.error("worker %s has not answered for %.0fs: restarting it", device,
                              timeout)
                    self._workers[device].kill()

    async def stop_admitting(self) -> None:
        """New and queued requests fail from now on; running jobs go on."""
        self._stopping = True
        await self._notify()

    async def stop(self) -> None:
        """Stops every worker (after the HTTP side has let running requests finish)."""
        self._stopping = True
        if self._watchdog is not None:
            self._watchdog.cancel()
        for runner in self._runners.values():
            if runner.expiry:
                runner.expiry.cancel()
        await asyncio.gather(*(w.stop() for w in self._workers.values()))

    def _worker_exited(self, worker: WorkerHandle) -> None:
        if not self._stopping:
            self.worker_restarts += 1
        for digest, runner in list(self._runners.items()):
            if runner.worker is worker:
                if not runner.ready.done():
                    # It died loading this model; loading it again would crash it again.
                    log.error("%s crashed its worker while loading; refusing it from now on",
                              runner.ref.name)
                    self._crashed_loads.add(digest)
                self._drop(digest)
        if not self._stopping:
            self._spawn(self._restart(worker))

    async def _restart(self, old: WorkerHandle) -> None:
        await asyncio.sleep(RESTART_DELAY)
        while not self._stopping:
            handle = self._new_worker(old.device, self._n_threads, self._debug, self._worker_exited)
            try:
                await handle.start()
            except (WorkerDied, asyncio.TimeoutError) as exc:
                log.error("restarting worker %s failed: %s", old.device.id, exc)
                await handle.stop()
                await asyncio.sleep(RESTART_DELAY * 5)
                continue
            self._workers[old.device.id] = handle
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
        self._start(job, protocol.Embed(job.id, job.runner.model_id, inputs, truncate))
        try:
            reply = await job.next()
        finally:
            job.close()
        if isinstance(reply, protocol.Embedded):
            job.runner.embed_size = reply.memory
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
        """Unloads now if idle, else as soon as the last running job ends."""
        runner = self._runners.get(digest)
        if runner is None:
            return
        runner.keep_alive = 0
        runner.draining = True
        if runner.active == 0:
            await self._unload(runner)

    async def probe(self, timeout: float) -> dict[str, str]:
        """Each device's worker state: "ready", "loading", "not responding" (a stopped or hung
        process: no answer to a ping within `timeout`) or "restarting"."""
        async def state(worker: WorkerHandle) -> str:
            if not worker.alive:
                return "restarting"
            try:
                await asyncio.wait_for(worker.request(protocol.Ping(next(self._ids))), timeout)
            except asyncio.TimeoutError:
                # Loading weights blocks the step loop for as long as it takes: not a hang.
                loading = any(r.worker is worker and not r.ready.done()
                              for r in self._runners.values())
                return "loading" if loading else "not responding"
            except WorkerDied:
                return "restarting"
            return "ready"

        states = await asyncio.gather(*(state(w) for w in self._workers.values()))
        return dict(zip(self._workers, states))

    @property
    def queued(self) -> int:
        """Requests waiting for a slot (or for their model to load)."""
        return self._waiting

    def devices(self) -> list[Device]:
        return self._inventory.devices()

    def running(self) -> list[Runner]:
        return [r for r in self._runners.values() if r.ready.done() and not r.ready.exception()]

    # ---- slots ---------------------------------------------------------------------------

    async def _acquire(self, ref: ModelRef, num_ctx: int, keep_alive: float | None) -> Job:
        if self._waiting >= self._max_queue:
            raise QueueFull()
        self._waiting += 1
        started = time.perf_counter_ns()
        try:
            while True:
                if self._stopping:
                    raise SchedulerError("server is shutting down")
                if ref.digest in self._crashed_loads:
                    raise SchedulerError(f"unable to load model {ref.name}: loading it crashed "
                                         "the model runner (a damaged or unsupported file?)")
                runner = self._runners.get(ref.digest)
                if runner is not None and runner.num_ctx != num_ctx and not runner.draining:
                    runner.draining = True  # same weights, other context size: replace when idle
                    if runner.active == 0:
                        await self._unload(runner)
                        continue
                if runner is None:
                    runner = await self._place_and_load(ref, num_ctx, keep_alive)
                    if runner is None:
                        await self._wait_for_change()
                        continue
                if not runner.ready.done():
                    await asyncio.shield(runner.ready)
                if runner.ready.exception() is not None:
                    raise SchedulerError(str(runner.ready.exception()))
                if not runner.draining and runner.active < runner.slots and runner.worker.alive:
                    break
                await self._wait_for_change()
        finally:
            self._waiting -= 1
        runner.active += 1
        runner.ref = ref  # names sharing these weights share the runner; /api/ps shows the latest
        runner.keep_alive = self._default_keep_alive if keep_alive is None else keep_alive
        runner.expires_at = time.time() + min(runner.keep_alive, 1e10)
        if runner.expiry is not None:
            runner.expiry.cancel()
            runner.expiry = None
        return Job(next(self._ids), runner, time.perf_counter_ns() - started, self)

    def _release(self, job: Job) -> None:
        runner = job.runner
        runner.worker.close_job(job.id)
        runner.active -= 1
        runner.last_used = time.monotonic()
        runner.expires_at = time.time() + min(runner.keep_alive, 1e10)
        if runner.active == 0 and self._runners.get(runner.ref.digest) is runner:
            if runner.draining or runner.keep_alive <= 0:
                self._spawn(self._unload(runner))
            elif math.isfinite(runner.keep_alive):
                runner.expiry = asyncio.get_running_loop().call_later(
                    runner.keep_alive, lambda: self._spawn(self._expire(runner)))
        self._spawn(self._notify())

    async def _expire(self, runner: Runner) -> None:
        if runner.active == 0 and self._runners.get(runner.ref.digest) is runner:
            log.info("keep-alive expired for %s", runner.ref.name)
            await self._unload(runner)

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _wait_for_change(self) -> None:
        async with self._changed:
            await self._changed.wait()

    # ---- loading -------------------------------------------------------------------------

    async def _place_and_load(self, ref: ModelRef, num_ctx: int,
                              keep_alive: float | None) -> Runner | None:
        slots, kv_cells = placement.kv_plan(num_ctx, self._slots)
        need = placement.estimate_bytes(ref.file_size, ref.kv_bytes_per_token, kv_cells)
        live = {d.id: d for d in self._inventory.devices() if d.id in self._workers
                and self._workers[d.id].alive}
        loaded = [placement.LoadedModel(r.model_id, r.worker.device.id, r.size + r.embed_size,
                                        r.active == 0 and r.ready.done(), r.last_used)
                  for r in self._runners.values()]
        decision = placement.place(list(live.values()), loaded, need, self._max_loaded)
        if decision.never_fits:
            largest = max(d.total_memory for d in live.values())
            raise SchedulerError(f"model requires more memory ({_gib(need)}) than any device has "
                                 f"({_gib(largest)})")
        if decision.device_id is None:
            return None
        for victim in [r for r in self._runners.values() if r.model_id in decision.evict]:
            log.info("evicting %s to make room for %s", victim.ref.name, ref.name)
            await self._unload(victim)
        if ref.digest in self._runners:  # someone else started this load while we evicted
            return self._runners[ref.digest]
        worker = self._workers[decision.device_id]
        runner = Runner(ref=ref, model_id=f"{ref.digest[7:19]}-{next(self._ids)}", num_ctx=num_ctx,
                        slots=slots, kv_cells=kv_cells, worker=worker,
                        ready=asyncio.get_running_loop().create_future(),
                        keep_alive=self._default_keep_alive if keep_alive is None else keep_alive)
        self._runners[ref.digest] = runner
        self._spawn(self._load(runner))
        return runner

    async def _load(self, runner: Runner) -> None:
        n_gpu_layers = 999 if runner.worker.device.is_gpu and runner.worker.gpu_offload else 0
        try:
            reply = await runner.worker.request(protocol.Load(
                runner.model_id, runner.ref.path, runner.num_ctx, runner.slots, n_gpu_layers,
                list(runner.ref.adapters), runner.kv_cells, self._batch_invariant))
        except WorkerDied as exc:
            reply = protocol.LoadFailed(runner.model_id, str(exc))
        if runner.ready.done():
            pass  # the worker died meanwhile and _drop has already failed this load
        elif isinstance(reply, protocol.Loaded):
            # llama.cpp reports the weights; the KV cache comes on top.
            runner.size = reply.weights_size + runner.ref.kv_bytes_per_token * runner.kv_cells
            runner.size_vram = runner.size if reply.on_gpu else 0
            log.info("loaded %s on %s in %.2fs", runner.ref.name, runner.worker.device.id,
                     reply.load_duration / 1e9)
            runner.ready.set_result(None)
        else:
            message = reply.message if isinstance(reply, protocol.LoadFailed) else "load failed"
            log.error("loading %s failed: %s", runner.ref.name, message)
            runner.ready.set_exception(SchedulerError(f"unable to load model: {message}"))
            runner.ready.exception()  # mark retrieved: waiters re-raise it themselves
            if self._runners.get(runner.ref.digest) is runner:
                del self._runners[runner.ref.digest]
        await self._notify()

    async def _unload(self, runner: Runner) -> None:
        if self._runners.get(runner.ref.digest) is not runner:
            return
        self._drop(runner.ref.digest)
        if runner.worker.alive:
            try:
                await runner.worker.request(protocol.Unload(runner.model_id))
            except WorkerDied:
                pass
        log.info("unloaded %s", runner.ref.name)
        await self._notify()

    def _drop(self, digest: str) -> None:
        runner = self._runners.pop(digest)
        if runner.expiry is not None:
            runner.expiry.cancel()
        if not runner.ready.done():
            runner.ready.set_exception(SchedulerError(CRASH_MESSAGE))
            runner.ready.exception()


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB"

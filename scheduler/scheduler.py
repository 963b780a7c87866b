"""Policy: which runner serves a request, when models load and unload, how many requests wait.

Runs in the front-end process on the event loop. A runner (scheduler/runner.py) is one model
loaded on one worker with `slots` sequences; a model may have several runners on different
devices (replicas). A job holds one slot (a reference on its runner) from dispatch until its
final event. Requests that find no free slot wait, at most `max_queue` of them in all (more get
503), in one waiting line per model: only the first in its model's line takes a slot or starts
a load, so nobody overtakes an earlier request for the same model, and a busy model's line never
holds up another model's requests.

A runner serves only requests whose load options equal its own (`needs_reload`); another value
drains it and loads the model anew once it is idle. When every replica of a model is full and
requests wait, another replica is loaded on a device with free memory (no eviction for it), up
to `max_replicas`; each request goes to the replica with the most free slots; a replica left
idle while another remains is unloaded after `replica_idle` seconds. An idle runner unloads when
its keep-alive expires, or earlier when placement needs its memory. Where a new runner goes is
plan.py's decision; the worker processes are the pool's (pool.py).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Sequence

from scheduler import memory, placement
from scheduler.devices import Device, Inventory
from scheduler.errors import QueueFull, SchedulerError
from scheduler.job import Embeddings, Final, Job
from scheduler.plan import Room, Wanted, gib, plan
from scheduler.pool import Activity, WorkerFactory, WorkerPool
from scheduler.runner import ModelRef, Runner, needs_reload
from scheduler.snapshot import RunnerState, Snapshot
from scheduler.tasks import Background
from scheduler.worker import CRASH_MESSAGE, WorkerDied, WorkerHandle
from workers import protocol
from workers.options import LoadOptions, RequestOptions

log = logging.getLogger("corral.scheduler")


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
    flash_attention: bool | None = None  # OLLAMA_FLASH_ATTENTION; None: auto
    kv_cache_type: str = "f16"  # OLLAMA_KV_CACHE_TYPE
    load_timeout: float = math.inf  # OLLAMA_LOAD_TIMEOUT: seconds
    speculative: str = "auto"  # CORRAL_SPECULATIVE: auto, always or off
    debug: bool = False


class Scheduler:
    def __init__(self, inventory: Inventory, config: Config,
                 worker_factory: WorkerFactory = WorkerHandle) -> None:
        self._inventory = inventory
        self._config = config
        self._pool = WorkerPool(inventory, worker_factory, n_threads=config.n_threads,
                                debug=config.debug, hang_timeout=config.hang_timeout,
                                activity=self._activity, lost=self._worker_lost,
                                changed=self._notify)
        self._runners: dict[str, list[Runner]] = {}  # by weights digest: the replicas
        self._lines: dict[str, deque[int]] = {}  # by weights digest: waiting tickets in order
        self._changed = asyncio.Condition()
        self._waiting = 0
        self._ids = itertools.count(1)
        self._stopping = False
        self._tasks = Background()
        self._crashed_loads: set[LoadKey] = set()  # loads that killed a worker
        self._no_replicas: set[str] = set()  # digests whose replica failed to load
        self._max_loaded = config.max_loaded
        self._max_replicas = config.max_replicas

    # ---- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        devices = self._inventory.devices()
        self._max_loaded = self._config.max_loaded or placement.auto_max_loaded(devices)
        self._max_replicas = self._config.max_replicas or len(devices)
        await self._pool.start()

    async def stop_admitting(self) -> None:
        """New and waiting requests fail from now on; running jobs go on."""
        self._stopping = True
        self._pool.wind_down()
        await self._notify()

    async def stop(self) -> None:
        """Stops every worker (after the HTTP side has let running requests finish)."""
        self._stopping = True
        self._tasks.cancel()
        for runner in self._all_runners():
            if runner.expiry:
                runner.expiry.cancel()
        await self._pool.stop()

    # ---- public API ----------------------------------------------------------------------

    async def submit(self, ref: ModelRef, load: LoadOptions, keep_alive: float | None,
                     prompt: protocol.PromptSpec, options: RequestOptions,
                     want_context: bool, output_format: protocol.OutputFormat = None,
                     logprobs: int = -1, shift: bool = True,
                     format_prefix: str = "") -> Job[protocol.Done]:
        """A generation: waits for a slot on a runner with these load options (loading the
        model first if needed) and hands the worker the prompt (protocol.Submit says what the
        other arguments mean)."""
        runner, waited = await self._acquire(ref, load, keep_alive)
        return self._start(runner, waited, protocol.Done, lambda job_id: protocol.Submit(
            job_id, runner.model_id, prompt, options, want_context, output_format, logprobs,
            shift, format_prefix))

    async def embed(self, ref: ModelRef, load: LoadOptions, keep_alive: float | None,
                    inputs: list[str | list[int]], truncate: bool) -> Embeddings:
        """The inputs' embeddings; raises JobFailed when the worker refuses them."""
        runner, waited = await self._acquire(ref, load, keep_alive)
        runner.embeds += 1
        try:
            job = self._start(runner, waited, protocol.Embedded, lambda job_id: protocol.Embed(
                job_id, runner.model_id, inputs, truncate))
            async with job:
                reply = await anext(job)
        finally:
            runner.embeds -= 1
        assert isinstance(reply, protocol.Embedded)  # an embedding sends no text
        runner.embed_size = reply.memory
        return Embeddings(reply.embeddings, reply.prompt_eval_count, waited)

    async def load(self, ref: ModelRef, load: LoadOptions, keep_alive: float | None) -> int:
        """Loads (or keeps) the model and returns the load duration; holds no slot after."""
        runner, waited = await self._acquire(ref, load, keep_alive)
        self._unref(runner)
        return waited

    async def unload(self, digest: str) -> None:
        """Unloads every replica now if idle, else as soon as its last running job ends."""
        for runner in list(self._runners.get(digest, [])):
            runner.keep_alive = 0
            runner.draining = True
            if runner.refcount == 0:
                await self._unload(runner)

    async def probe(self, timeout: float) -> dict[str, str]:
        """Each worker's state (pool.py)."""
        return await self._pool.probe(timeout)

    def snapshot(self) -> Snapshot:
        """The loaded runners, the waiting requests and the worker restarts, as of now."""
        loaded = [r for r in self._all_runners() if r.ready.done() and not r.ready.exception()]
        return Snapshot(tuple(_state(r) for r in loaded), self._waiting, self._pool.restarts)

    def devices(self) -> list[Device]:
        """The inventory now (NVML queries: call it off the event loop)."""
        return self._inventory.devices()

    def _all_runners(self) -> list[Runner]:
        return [r for replicas in self._runners.values() for r in replicas]

    # ---- slots ---------------------------------------------------------------------------

    async def _acquire(self, ref: ModelRef, load: LoadOptions,
                       keep_alive: float | None) -> tuple[Runner, int]:
        """A runner with one more slot held, and the ns waited for it."""
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
                if _load_key(ref.digest, load) in self._crashed_loads:
                    raise SchedulerError(f"unable to load model {ref.name}: loading it crashed "
                                         "the model runner (a damaged or unsupported file?)")
                first = self._first_load(ref.digest)
                if first is not None:  # every waiter shares the outcome of a model's first load
                    await self._loaded(first)
                    continue
                if line[0] == ticket:
                    runner = await self._admit(ref, load, keep_alive, len(line))
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
            self._tasks.spawn(self._notify())  # the next in line may take a slot now
        runner.refcount += 1
        runner.ref = ref  # names sharing these weights share the runner; /api/ps shows the latest
        runner.keep_alive = self._config.keep_alive if keep_alive is None else keep_alive
        runner.expires_at = time.time() + min(runner.keep_alive, 1e10)
        if runner.expiry is not None:
            runner.expiry.cancel()
            runner.expiry = None
        return runner, time.perf_counter_ns() - started

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

    async def _admit(self, ref: ModelRef, load: LoadOptions, keep_alive: float | None,
                     waiting: int) -> Runner | None:
        """A runner with a free slot for the first request in the model's line, or None after
        starting what will make one (a load, a replica), or when it must wait."""
        replicas = self._runners.get(ref.digest, [])
        for runner in list(replicas):
            if not runner.draining and needs_reload(runner.options, load):
                runner.draining = True  # other load options: replace it once idle
                if runner.refcount == 0 and runner.ready.done():
                    await self._unload(runner)
        if any(r.draining for r in replicas):
            return None  # a fresh load once they are gone (their memory is needed)
        states = [placement.Replica(r.slots - r.refcount, r.ready.done() and r.worker.alive)
                  for r in replicas]
        pick = placement.pick_replica(states)
        if pick is not None:
            return replicas[pick]
        if not replicas:
            self._load_new(ref, load, keep_alive, replica=False)
        elif ref.digest not in self._no_replicas and placement.want_replica(
                states, waiting, self._max_replicas):
            self._load_new(ref, load, keep_alive, replica=True)
        return None

    def _start(self, runner: Runner, waited: int, final: type[Final],
               message: Callable[[int], protocol.Submit | protocol.Embed]) -> Job[Final]:
        job_id = next(self._ids)
        messages = runner.worker.open_job(job_id)
        try:
            runner.worker.send(message(job_id))
        except BaseException as exc:
            # Whatever failed (a dead worker, a message that cannot be encoded, a cancelled
            # task), the slot must come back, or the model wedges once every slot has leaked.
            runner.worker.close_job(job_id)
            self._unref(runner)
            if isinstance(exc, WorkerDied):
                raise SchedulerError(CRASH_MESSAGE) from None
            raise
        return Job(job_id, runner, runner.ref.name, waited, final, messages, self._release)

    def _release(self, job: Job[Final]) -> None:
        job.runner.worker.close_job(job.id)
        self._unref(job.runner)

    def _unref(self, runner: Runner) -> None:
        runner.refcount -= 1
        runner.last_used = time.monotonic()
        runner.expires_at = time.time() + min(runner.keep_alive, 1e10)
        if runner.refcount == 0 and self._holds(runner):
            if runner.draining or runner.keep_alive <= 0:
                self._tasks.spawn(self._unload(runner))
            else:
                self._arm_expiry(runner)
        self._tasks.spawn(self._notify())

    # ---- keep-alive ----------------------------------------------------------------------

    def _arm_expiry(self, runner: Runner) -> None:
        """Unloads an idle runner at its keep-alive, or sooner when it is a surplus replica."""
        delay = runner.keep_alive - (time.monotonic() - runner.last_used)
        if self._surplus(runner):
            delay = min(delay, self._config.replica_idle)
        if math.isfinite(delay):
            runner.expiry = asyncio.get_running_loop().call_later(
                max(0.0, delay), lambda: self._tasks.spawn(self._expire(runner)))

    def _surplus(self, runner: Runner) -> bool:
        return any(r is not runner and not r.draining and r.ready.done()
                   for r in self._runners.get(runner.ref.digest, []))

    async def _expire(self, runner: Runner) -> None:
        runner.expiry = None
        if runner.refcount or not self._holds(runner):
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

    # ---- loading -------------------------------------------------------------------------

    def _load_new(self, ref: ModelRef, load: LoadOptions, keep_alive: float | None,
                  replica: bool) -> None:
        """Books a new runner where plan.py puts it and starts loading it in the background."""
        slots, kv_cells = placement.kv_plan(load["num_ctx"], self._config.slots,
                                            self._config.batch_invariant,
                                            memory.kv_cell_scale(self._config.kv_cache_type))
        taken = frozenset(d for r in self._runners.get(ref.digest, []) for d in r.plan.devices)
        ubatch = protocol.batch_tokens(load["num_batch"], kv_cells, slots)
        where = plan(Wanted(ref.memory, slots, kv_cells, load["num_gpu"], ubatch,
                            replica_of=taken if replica else None), self._room())
        if where is None:
            return
        victims = [r for r in self._all_runners() if r.model_id in where.evict]
        for victim in victims:
            log.info("evicting %s to make room for %s", victim.ref.name, ref.name)
            self._drop(victim)
        worker = self._pool.worker_for(where.devices)
        runner = Runner(ref=ref, model_id=f"{ref.digest[7:19]}-{next(self._ids)}", options=load,
                        slots=slots, kv_cells=kv_cells, worker=worker,
                        ready=asyncio.get_running_loop().create_future(),
                        keep_alive=self._config.keep_alive if keep_alive is None else keep_alive,
                        plan=where)
        self._runners.setdefault(ref.digest, []).append(runner)
        log.info("loading %s%s on %s: %s estimated (%s on the GPU, %d of %d layers)", ref.name,
                 " (replica)" if replica else "", worker.device.id, gib(where.estimate.total),
                 gib(where.estimate.vram), where.estimate.gpu_layers, ref.memory.all_layers)
        self._tasks.spawn(self._load(runner, victims))
        self._tasks.spawn(self._notify())  # waiters for this model now wait for this load

    def _room(self) -> Room:
        return Room(devices=self._inventory.devices(), host=self._inventory.host(),
                    loaded=self._books(),
                    limits=placement.Limits(self._max_loaded, self._config.gpu_overhead),
                    offloading=self._pool.offloading(), workers_up=self._pool.all_up(),
                    spread=self._config.spread,
                    flash_attention=self._config.flash_attention is not False
                    and not self._config.batch_invariant)

    def _books(self) -> list[placement.LoadedModel]:
        return [placement.LoadedModel(r.model_id, r.ref.digest, r.plan.memory,
                                      r.refcount == 0 and r.ready.done(), r.last_used,
                                      loading=not r.ready.done())
                for r in self._all_runners()]

    async def _load(self, runner: Runner, victims: Sequence[Runner]) -> None:
        # Their memory must be free before llama.cpp allocates, whichever worker holds them.
        await asyncio.gather(*(self._send_unload(v) for v in victims))
        options = runner.options
        try:
            await self._pool.started(runner.worker)  # a split's worker starts on demand
            timeout = self._config.load_timeout
            reply = await asyncio.wait_for(runner.worker.request(protocol.Load(
                runner.model_id, runner.ref.path, runner.num_ctx, runner.slots,
                runner.plan.n_gpu_layers, list(runner.ref.adapters), runner.kv_cells,
                self._config.batch_invariant, list(runner.plan.shares),
                num_batch=options["num_batch"], main_gpu=options["main_gpu"],
                n_threads=options["num_thread"], use_mmap=options["use_mmap"],
                flash_attention=self._config.flash_attention,
                kv_cache_type=self._config.kv_cache_type, projector=runner.ref.projector,
                speculative=self._config.speculative, draft=runner.ref.draft)),
                None if math.isinf(timeout) else timeout)
        except asyncio.TimeoutError:
            # Stuck in llama.cpp's load: only a new worker process gets the device back.
            log.error("loading %s took longer than OLLAMA_LOAD_TIMEOUT: restarting its worker",
                      runner.ref.name)
            runner.worker.kill()
            reply = protocol.LoadFailed(runner.model_id, "timed out waiting for the model to load")
        except WorkerDied as exc:
            reply = protocol.LoadFailed(runner.model_id, str(exc) or "worker did not start")
        if runner.ready.done():
            pass  # the worker died meanwhile and _drop has already failed this load
        elif isinstance(reply, protocol.Loaded):
            log.info("loaded %s on %s in %.2fs", runner.ref.name, runner.worker.device.id,
                     reply.load_duration / 1e9)
            runner.plan = runner.plan.with_weights(reply.weights_size)
            runner.ready.set_result(None)
            if runner.refcount == 0:
                # Idle from now until a waiter takes it (which disarms this): a replica nobody
                # ended up needing, or a model whose requests all went away while it loaded,
                # which would otherwise stay loaded, unexpiring, until evicted.
                runner.last_used = time.monotonic()
                runner.expires_at = time.time() + min(runner.keep_alive, 1e10)
                self._arm_expiry(runner)
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
            await self._retire(runner.worker)
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
        await self._retire(runner.worker)

    async def _retire(self, worker: WorkerHandle) -> None:
        """A split's worker goes with its last model."""
        if not any(r.worker is worker for r in self._all_runners()):
            await self._pool.retire(worker)

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

    # ---- what the pool asks --------------------------------------------------------------

    def _activity(self, worker: WorkerHandle) -> Activity:
        mine = [r for r in self._all_runners() if r.worker is worker]
        busy = [r for r in mine if r.refcount]
        return Activity(loading=any(not r.ready.done() for r in mine),
                        busy=tuple(r.model_id for r in busy),
                        embedding=any(r.embeds for r in busy))

    def _worker_lost(self, worker: WorkerHandle, split: bool) -> None:
        """A worker died: its runners are gone (its jobs have failed already)."""
        for runner in [r for r in self._all_runners() if r.worker is worker]:
            others_ready = any(r is not runner and r.ready.done()
                               for r in self._runners.get(runner.ref.digest, []))
            # It died loading this model; loading it again would crash it again. (A split's
            # worker may as well have died starting up, or of the split: not held against it.)
            if not runner.ready.done() and not others_ready and not split:
                log.error("%s crashed its worker while loading; refusing it with these load "
                          "options from now on: %s", runner.ref.name, runner.options)
                self._crashed_loads.add(_load_key(runner.ref.digest, runner.options))
            self._drop(runner)


# A load is refused after a crash with its load options only: other options (a context of
# its own, another batch) may load the same weights, as a request's defaults do.
LoadKey = tuple[str, tuple[tuple[str, object], ...]]


def _load_key(digest: str, options: LoadOptions) -> LoadKey:
    return digest, tuple(sorted(options.items()))


def _state(runner: Runner) -> RunnerState:
    step = runner.worker.last_steps.get(runner.model_id)
    return RunnerState(
        name=runner.ref.name, digest=runner.ref.manifest_digest, details=runner.ref.details,
        size=runner.size + runner.embed_size,
        size_vram=runner.size_vram + (runner.embed_size if runner.size_vram else 0),
        context_length=runner.num_ctx, expires_at=runner.expires_at,
        devices=runner.plan.devices, slots=runner.slots, refcount=runner.refcount,
        kv_used=step.kv_used if step else 0,
        kv_cells=step.kv_cells if step else runner.kv_cells)

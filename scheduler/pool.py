"""The worker processes: one per device, and one per split; started, watched and restarted.

Process mechanics only, apart from scheduling policy (as Ollama keeps them in llm/server.go):
- each device of the inventory gets a worker at start;
- a split gets a worker of its own, for its set of GPUs (`CUDA_VISIBLE_DEVICES` listing them),
  started on demand and stopped with its last model (`retire`);
- the watchdog pings every worker and kills one silent past its deadline (watchdog.py decides
  the deadline from its step times); loading is never a hang;
- a worker that dies (crash, OOM kill, the watchdog) is reported to the scheduler (`lost`) and
  replaced, unless it was a split's or its device left the inventory.
What runs on a worker is the scheduler's business: the pool asks it through `activity`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass
from typing import Awaitable, Callable, Sequence

from scheduler import watchdog
from scheduler.devices import Device, Inventory
from scheduler.tasks import Background
from scheduler.worker import WorkerDied, WorkerHandle
from workers import protocol

log = logging.getLogger("corral.scheduler")

RESTART_DELAY = 1.0


@dataclass(frozen=True)
class Activity:
    """What the scheduler has on one worker, as the watchdog and the probe need it."""

    loading: bool  # a load in flight: it blocks the step loop, which is not a hang
    busy: tuple[str, ...] = ()  # model ids with requests in flight
    embedding: bool = False  # one of those requests embeds: it sends no steps to judge it by


WorkerFactory = Callable[..., WorkerHandle]  # (device, n_threads, debug, on_exit)


class WorkerPool:
    def __init__(self, inventory: Inventory, factory: WorkerFactory, *, n_threads: int,
                 debug: bool, hang_timeout: float | None,
                 activity: Callable[[WorkerHandle], Activity],
                 lost: Callable[[WorkerHandle, bool], None],
                 changed: Callable[[], Awaitable[None]]) -> None:
        """`lost(worker, split)`: a worker died (its runners are gone); `changed()`: a worker
        came back or a device left, so waiting requests should look again."""
        self._inventory = inventory
        self._new_worker = factory  # tests pass a fake that needs no llama.cpp
        self._n_threads = n_threads
        self._debug = debug
        self._hang_timeout = hang_timeout  # CORRAL_WORKER_TIMEOUT; None: no watchdog
        self._activity = activity
        self._lost = lost
        self._changed = changed
        self._workers: dict[str, WorkerHandle] = {}  # one per device, by device id
        self._splits: dict[str, WorkerHandle] = {}  # by "cuda:0+cuda:1"
        self._split_starts: dict[str, asyncio.Future[None]] = {}  # each split's start, once
        self._nonces = itertools.count(1)
        self._tasks = Background()
        self._winding_down = False
        self.restarts = 0  # workers that died or were killed and replaced

    async def start(self) -> None:
        handles = [self._spawn(d) for d in self._inventory.devices()]
        await asyncio.gather(*(h.start() for h in handles))
        self._workers = {h.device.id: h for h in handles}
        for handle in handles:
            self._guard(handle)

    def wind_down(self) -> None:
        """The server is stopping: no more restarts or watchdog kills."""
        self._winding_down = True

    async def stop(self) -> None:
        self.wind_down()
        self._tasks.cancel()
        await asyncio.gather(*(w.stop() for w in [*self._workers.values(),
                                                  *self._splits.values()]))

    # ---- what the scheduler asks ----------------------------------------------------------

    def all_up(self) -> bool:
        """Every device's worker is running (none restarting)."""
        return all(d.id in self._workers and self._workers[d.id].alive
                   for d in self._inventory.devices())

    def offloading(self) -> frozenset[str]:
        """The devices whose worker runs layers on the GPU (llama.cpp built with CUDA)."""
        return frozenset(d for d, w in self._workers.items() if w.device.is_gpu and w.gpu_offload)

    def worker_for(self, devices: Sequence[str]) -> WorkerHandle:
        """The device's worker, or a split's (started now if it has none yet)."""
        if len(devices) == 1:
            return self._workers[devices[0]]
        split_id = "+".join(devices)
        if split_id not in self._splits:
            members = [self._workers[d].device for d in devices]
            device = Device(split_id, f"split over {', '.join(devices)}",
                            sum(d.total_memory for d in members),
                            sum(d.free_memory for d in members),
                            {"CUDA_VISIBLE_DEVICES": ",".join(
                                d.env.get("CUDA_VISIBLE_DEVICES", "") for d in members)})
            handle = self._spawn(device)
            self._splits[split_id] = handle
            self._split_starts[split_id] = asyncio.ensure_future(self._start_split(handle))
        return self._splits[split_id]

    async def started(self, worker: WorkerHandle) -> None:
        """Waits for a split's worker to start (raises what its start raised)."""
        starting = self._split_starts.get(worker.device.id)
        if starting is not None:
            await asyncio.shield(starting)

    async def retire(self, worker: WorkerHandle) -> None:
        """Stops a split's worker (the scheduler calls this once it holds no model)."""
        if self._splits.get(worker.device.id) is worker:
            self._forget_split(worker)
            await worker.stop()

    async def probe(self, timeout: float) -> dict[str, str]:
        """Each worker's state: "ready", "loading", "not responding" (a stopped or hung
        process: no answer to a ping within `timeout`) or "restarting"."""
        async def state(worker: WorkerHandle) -> str:
            if not worker.alive:
                return "restarting"
            try:
                await asyncio.wait_for(worker.request(protocol.Ping(next(self._nonces))), timeout)
            except asyncio.TimeoutError:
                return "loading" if self._activity(worker).loading else "not responding"
            except WorkerDied:
                return "restarting"
            return "ready"

        workers = {**self._workers, **self._splits}
        states = await asyncio.gather(*(state(w) for w in workers.values()))
        return dict(zip(workers, states))

    # ---- starting -------------------------------------------------------------------------

    def _spawn(self, device: Device) -> WorkerHandle:
        # CPU devices (several only in a simulated inventory) share the cores.
        cpus = sum(1 for d in self._inventory.devices() if not d.is_gpu)
        threads = self._n_threads if device.is_gpu else self._n_threads // max(1, cpus)
        return self._new_worker(device, max(1, threads), self._debug, self._exited)

    async def _start_split(self, worker: WorkerHandle) -> None:
        try:
            await worker.start()
        except BaseException:
            await worker.stop()  # a start that timed out leaves a process behind
            raise
        self._guard(worker)

    def _forget_split(self, worker: WorkerHandle) -> None:
        del self._splits[worker.device.id]
        self._split_starts.pop(worker.device.id, None)

    # ---- deaths and restarts --------------------------------------------------------------

    def _exited(self, worker: WorkerHandle) -> None:
        if not self._winding_down:
            self.restarts += 1
        split = self._splits.get(worker.device.id) is worker
        self._lost(worker, split)
        if split:
            self._forget_split(worker)  # started for a split: not restarted
        elif not self._winding_down:
            self._tasks.spawn(self._restart(worker))
        self._tasks.spawn(self._changed())

    async def _restart(self, old: WorkerHandle) -> None:
        await asyncio.sleep(RESTART_DELAY)
        while not self._winding_down:
            if all(d.id != old.device.id for d in self._inventory.devices()):
                # Its node left the cluster (scheduler/ray_cluster.py): its models load on the
                # devices that remain when next asked for.
                log.warning("device %s is gone: its worker is not restarted", old.device.id)
                self._workers.pop(old.device.id, None)
                await self._changed()
                return
            handle = self._spawn(old.device)
            try:
                await handle.start()
            except (WorkerDied, asyncio.TimeoutError) as exc:
                log.error("restarting worker %s failed: %s", old.device.id, exc)
                await handle.stop()
                await asyncio.sleep(RESTART_DELAY * 5)
                continue
            self._workers[old.device.id] = handle
            self._guard(handle)
            await self._changed()
            return

    # ---- the watchdog ---------------------------------------------------------------------

    def _guard(self, worker: WorkerHandle) -> None:
        if self._hang_timeout is not None:
            self._tasks.spawn(self._watch(worker, self._hang_timeout))

    async def _watch(self, worker: WorkerHandle, ceiling: float) -> None:
        """Kills a worker that goes silent (stopped, deadlocked, stuck in a native call) for
        longer than its deadline while a ping waits: its requests then end with the
        runner-stopped error and a new worker starts."""
        interval = min(watchdog.INTERVAL, ceiling / 4)
        while worker.alive and not self._winding_down:
            ping = asyncio.ensure_future(worker.request(protocol.Ping(next(self._nonces))))
            sent = time.monotonic()
            try:
                while not ping.done():
                    await asyncio.wait([ping], timeout=interval)
                    silent = time.monotonic() - max(sent, worker.last_heard)
                    if ping.done() or self._winding_down:
                        continue
                    activity = self._activity(worker)
                    if silent > self._deadline(worker, activity, ceiling) and not activity.loading:
                        log.error("worker %s has been silent for %.1fs: restarting it",
                                  worker.device.id, silent)
                        worker.kill()
                        return
                if ping.exception() is not None:
                    return  # the worker died; its replacement gets its own watch
            finally:
                ping.cancel()
            await asyncio.sleep(interval)

    @staticmethod
    def _deadline(worker: WorkerHandle, activity: Activity, ceiling: float) -> float:
        if activity.embedding:
            return ceiling  # an embedding batch sends no steps to judge it by
        return watchdog.silence_deadline(
            [tuple(worker.step_times.get(model_id, ())) for model_id in activity.busy], ceiling)

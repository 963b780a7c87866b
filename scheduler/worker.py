"""The front end's handle on one worker: its jobs, replies and step figures, and its death.

The handle speaks protocol messages; a transport (scheduler/transport.py) carries them: pipes to
a local process, or a Ray actor on a cluster node (scheduler/ray_cluster.py), chosen when the
handle is made. Messages arrive on the event loop. When the transport reports the worker gone,
every job and request waiting on it gets a clear failure and `on_exit` lets the scheduler
restart it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Callable

from scheduler.devices import Device
from scheduler.transport import PipeTransport, TransportFactory
from workers import protocol

log = logging.getLogger("corral.scheduler")

CRASH_MESSAGE = ("model runner has unexpectedly stopped, this may be due to resource limitations "
                 "or an internal error, check corral server logs for details")
START_TIMEOUT = 120.0
STEP_HISTORY = 32  # recent steps kept per model, for the hang deadline


class WorkerDied(RuntimeError):
    pass


class WorkerHandle:
    def __init__(self, device: Device, n_threads: int, debug: bool,
                 on_exit: Callable[["WorkerHandle"], None],
                 transport: TransportFactory = PipeTransport) -> None:
        self.device = device
        self._on_exit = on_exit
        self._transport = transport(device, n_threads, debug)
        self._ready: asyncio.Future[protocol.Ready] | None = None
        self._jobs: dict[int, asyncio.Queue[protocol.FromWorker | protocol.Chunk]] = {}
        self.last_steps: dict[str, protocol.Step] = {}  # by model id: the latest step's figures
        # By model id: (duration ns, tokens) of its recent steps, for the hang deadline.
        self.step_times: dict[str, deque[tuple[int, int]]] = {}
        self.last_heard = time.monotonic()  # when the worker last sent anything
        self._replies: dict[tuple[str, str], asyncio.Future[protocol.FromWorker]] = {}
        self.alive = False
        self.gpu_offload = False

    async def start(self) -> None:
        self._ready = asyncio.get_running_loop().create_future()
        self._transport.open(self._received, self._died)
        self.alive = True
        ready = await asyncio.wait_for(self._ready, START_TIMEOUT)
        self.gpu_offload = ready.gpu_offload
        log.info("worker %s started (pid %s, gpu offload %s)", self.device.id, ready.pid,
                 ready.gpu_offload)

    # ---- sending -------------------------------------------------------------------------

    def send(self, msg: protocol.ToWorker) -> None:
        if not self.alive:
            raise WorkerDied(CRASH_MESSAGE)
        self._transport.send(msg)
        if not self.alive:
            raise WorkerDied(CRASH_MESSAGE)

    def open_job(self, job_id: int) -> asyncio.Queue[protocol.FromWorker | protocol.Chunk]:
        queue: asyncio.Queue[protocol.FromWorker | protocol.Chunk] = asyncio.Queue()
        self._jobs[job_id] = queue
        return queue

    def close_job(self, job_id: int) -> None:
        self._jobs.pop(job_id, None)

    async def request(self, msg: protocol.Load | protocol.Unload | protocol.Ping
                      ) -> protocol.FromWorker:
        """Sends Load/Unload/Ping and waits for the worker's answer to it."""
        if isinstance(msg, protocol.Ping):
            key = ("ping", str(msg.nonce))
        else:
            key = ("load" if isinstance(msg, protocol.Load) else "unload", msg.model_id)
        future = asyncio.get_running_loop().create_future()
        self._replies[key] = future
        try:
            self.send(msg)
            return await future
        finally:
            self._replies.pop(key, None)

    # ---- receiving -----------------------------------------------------------------------

    def _received(self, msg: protocol.FromWorker) -> None:
        self.last_heard = time.monotonic()
        if isinstance(msg, protocol.Step):
            self.last_steps[msg.model_id] = msg
            self.step_times.setdefault(msg.model_id, deque(maxlen=STEP_HISTORY)).append(
                (msg.duration, msg.tokens))
            for item in msg.texts:
                queue = self._jobs.get(item[0])
                if queue is not None:
                    queue.put_nowait(protocol.Chunk(*item))
        elif isinstance(msg, (protocol.Started, protocol.Done, protocol.Failed, protocol.Embedded)):
            queue = self._jobs.get(msg.job_id)
            if queue is not None:  # a cancelled job's late messages are dropped here
                queue.put_nowait(msg)
        elif isinstance(msg, (protocol.Loaded, protocol.LoadFailed)):
            self._resolve(("load", msg.model_id), msg)
        elif isinstance(msg, protocol.Unloaded):
            self.last_steps.pop(msg.model_id, None)
            self.step_times.pop(msg.model_id, None)
            self._resolve(("unload", msg.model_id), msg)
        elif isinstance(msg, protocol.Pong):
            self._resolve(("ping", str(msg.nonce)), msg)
        elif isinstance(msg, protocol.Ready) and self._ready and not self._ready.done():
            self._ready.set_result(msg)

    def _resolve(self, key: tuple[str, str], msg: protocol.FromWorker) -> None:
        future = self._replies.get(key)
        if future is not None and not future.done():
            future.set_result(msg)

    def _died(self) -> None:
        if not self.alive:
            return
        self.alive = False
        log.error("worker %s exited unexpectedly (%s)", self.device.id, self._transport.reap())
        for job_id, queue in self._jobs.items():
            queue.put_nowait(protocol.Failed(job_id, CRASH_MESSAGE))
        self._jobs.clear()
        for future in self._replies.values():
            if not future.done():
                future.set_exception(WorkerDied(CRASH_MESSAGE))
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(WorkerDied(CRASH_MESSAGE))
        self._on_exit(self)

    def kill(self) -> None:
        """Ends a hung worker; the transport then reports its death like any other."""
        self._transport.kill()

    async def stop(self) -> None:
        """Asks the worker to exit, then makes sure it has."""
        self.alive = False
        await self._transport.stop()

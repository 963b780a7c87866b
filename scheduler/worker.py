"""The front end's handle on one worker process: spawn, pipe I/O, death detection.

Replies are read on the event loop with `loop.add_reader` on the pipe's file descriptor (no
thread per request or per worker). When the pipe closes or the process dies, every job and
request waiting on this worker gets a clear failure and `on_exit` lets the scheduler restart it.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import time
from collections import deque
from multiprocessing.connection import Connection
from typing import Callable

from scheduler.devices import Device
from workers import protocol
from workers.main import run as worker_main

log = logging.getLogger("corral.scheduler")

CRASH_MESSAGE = ("model runner has unexpectedly stopped, this may be due to resource limitations "
                 "or an internal error, check corral server logs for details")
START_TIMEOUT = 120.0
STOP_TIMEOUT = 10.0
STEP_HISTORY = 32  # recent steps kept per model, for the hang deadline


class WorkerDied(RuntimeError):
    pass


class WorkerHandle:
    def __init__(self, device: Device, n_threads: int, debug: bool,
                 on_exit: Callable[["WorkerHandle"], None]) -> None:
        self.device = device
        self._n_threads = n_threads
        self._debug = debug
        self._on_exit = on_exit
        self._rx: Connection | None = None  # worker -> us, watched by the event loop
        self._tx: Connection | None = None  # us -> worker, non-blocking, buffered in _outbox
        self._outbox = bytearray()
        self._writer_armed = False
        self._reader = protocol.FrameReader()
        self._process: multiprocessing.process.BaseProcess | None = None
        self._ready: asyncio.Future[protocol.Ready] | None = None
        self._jobs: dict[int, asyncio.Queue[protocol.FromWorker | protocol.Chunk]] = {}
        self.last_steps: dict[str, protocol.Step] = {}  # by model id: the latest step's figures
        # By model id: (duration ns, tokens) of its recent steps, for the hang deadline.
        self.step_times: dict[str, deque[tuple[int, int]]] = {}
        self.last_heard = time.monotonic()  # when the worker last sent anything
        self._replies: dict[tuple[str, str], asyncio.Future[protocol.FromWorker]] = {}
        self.alive = False
        self.gpu_offload = False

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        ctx = multiprocessing.get_context("spawn")  # no forked copy of the event loop or locks
        inbox_r, inbox_w = ctx.Pipe(duplex=False)
        outbox_r, outbox_w = ctx.Pipe(duplex=False)
        self._process = ctx.Process(
            target=worker_main,
            args=(inbox_r, outbox_w, self.device.env, self._n_threads, self._debug),
            name=f"corral-worker-{self.device.id}", daemon=True)
        self._process.start()
        inbox_r.close()  # only the worker holds these ends now, so its exit closes our pipe
        outbox_w.close()
        self._rx, self._tx = outbox_r, inbox_w
        # A worker busy with a long step reads late; buffer instead of blocking the event loop.
        os.set_blocking(inbox_w.fileno(), False)
        self._ready = loop.create_future()
        loop.add_reader(outbox_r.fileno(), self._on_readable)
        self.alive = True
        ready = await asyncio.wait_for(self._ready, START_TIMEOUT)
        self.gpu_offload = ready.gpu_offload
        log.info("worker %s started (pid %s, gpu offload %s)", self.device.id, ready.pid,
                 ready.gpu_offload)

    # ---- sending -------------------------------------------------------------------------

    def send(self, msg: protocol.ToWorker) -> None:
        if not self.alive or self._tx is None:
            raise WorkerDied(CRASH_MESSAGE)
        self._outbox += protocol.frame(msg)
        self._flush()
        if not self.alive:
            raise WorkerDied(CRASH_MESSAGE)

    def _flush(self) -> None:
        """Writes what the pipe takes now; the loop calls back when it can take more."""
        if self._tx is None:
            return
        fd = self._tx.fileno()
        try:
            while self._outbox:
                del self._outbox[: os.write(fd, self._outbox)]
        except BlockingIOError:
            pass
        except OSError:
            self._died()
            return
        if bool(self._outbox) != self._writer_armed:
            loop = asyncio.get_running_loop()
            if self._outbox:
                loop.add_writer(fd, self._flush)
            else:
                loop.remove_writer(fd)
            self._writer_armed = bool(self._outbox)

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

    def _on_readable(self) -> None:
        assert self._rx is not None
        try:
            data = os.read(self._rx.fileno(), 1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._died()
            return
        self.last_heard = time.monotonic()
        for msg in self._reader.feed(data):
            self._dispatch(msg)

    def _dispatch(self, msg: protocol.FromWorker) -> None:
        if isinstance(msg, protocol.Step):
            self.last_steps[msg.model_id] = msg
            self.step_times.setdefault(msg.model_id, deque(maxlen=STEP_HISTORY)).append(
                (msg.duration, msg.tokens))
            for job_id, text, count in msg.texts:
                queue = self._jobs.get(job_id)
                if queue is not None:
                    queue.put_nowait(protocol.Chunk(job_id, text, count))
        elif isinstance(msg, (protocol.Done, protocol.Failed, protocol.Embedded)):
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
        self._close_pipes()
        exitcode = None
        if self._process is not None:
            # The pipe closes as the process dies, so a short wait reaps it; never stall the
            # event loop on a worker that closed its pipe but hangs: kill it.
            self._process.join(timeout=0.2)
            if self._process.is_alive():
                self._process.kill()
                self._process.join(timeout=1)
            exitcode = self._process.exitcode
        log.error("worker %s (pid %s) exited unexpectedly (exit code %s)", self.device.id,
                  self.pid, exitcode)
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
        """SIGKILL (it works on a stopped process too); the closed pipe then reports the death."""
        if self._process is not None and self._process.is_alive():
            self._process.kill()

    async def stop(self) -> None:
        """Asks the worker to exit, then makes sure it has (kill after STOP_TIMEOUT)."""
        process = self._process
        if self.alive and self._tx is not None:
            self._outbox += protocol.frame(protocol.Shutdown())
            self._flush()
            self.alive = False
        if process is not None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + STOP_TIMEOUT
            while process.is_alive() and loop.time() < deadline:
                await asyncio.sleep(0.05)
            if process.is_alive():
                process.kill()
            process.join(timeout=1)
        self._close_pipes()

    def _close_pipes(self) -> None:
        if self._rx is not None:
            asyncio.get_running_loop().remove_reader(self._rx.fileno())
            self._rx.close()
            self._rx = None
        if self._tx is not None:
            if self._writer_armed:
                asyncio.get_running_loop().remove_writer(self._tx.fileno())
                self._writer_armed = False
            self._tx.close()
            self._tx = None

"""How a worker handle reaches its worker: the interface, and the pipe to a local process.

A handle (scheduler/worker.py) speaks protocol messages and keeps the books (jobs, replies,
steps); a transport only moves those messages and reports the worker's end. The pipe transport
here runs the worker as a child process on this machine; the Ray transport
(scheduler/ray_cluster.py) runs it as an actor on a node of a cluster.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from multiprocessing.connection import Connection
from typing import Callable, Protocol

from scheduler.devices import Device
from workers import protocol
from workers.main import run as worker_main

STOP_TIMEOUT = 10.0  # how long a worker asked to exit may take before it is killed

OnMessage = Callable[[protocol.FromWorker], None]
OnClosed = Callable[[], None]


class Transport(Protocol):
    def open(self, on_message: OnMessage, on_closed: OnClosed) -> None:
        """Starts the worker. Each message it sends then goes to `on_message`, on the event
        loop; its end (exit, crash, a lost node) goes to `on_closed`."""

    def send(self, msg: protocol.ToWorker) -> None:
        """Queues a message without blocking; a worker found gone is reported to `on_closed`."""

    def kill(self) -> None:
        """Ends the worker at once (a hung one too); `on_closed` follows."""

    def reap(self) -> str:
        """After `on_closed`: releases what is left and says how the worker ended, for the log."""

    async def stop(self) -> None:
        """Asks the worker to exit, kills it after STOP_TIMEOUT, and releases everything."""


TransportFactory = Callable[[Device, int, bool], Transport]  # (device, n_threads, debug)


class PipeTransport:
    """A child process with one pipe per direction, read with `loop.add_reader` (no thread per
    worker) and written through a non-blocking outbox."""

    def __init__(self, device: Device, n_threads: int, debug: bool) -> None:
        self._device = device
        self._n_threads = n_threads
        self._debug = debug
        self._rx: Connection | None = None  # worker -> us, watched by the event loop
        self._tx: Connection | None = None  # us -> worker, non-blocking, buffered in _outbox
        self._outbox = bytearray()
        self._writer_armed = False
        self._reader = protocol.FrameReader()
        self._process: multiprocessing.process.BaseProcess | None = None
        self._on_message: OnMessage = lambda msg: None
        self._on_closed: OnClosed = lambda: None

    def open(self, on_message: OnMessage, on_closed: OnClosed) -> None:
        self._on_message, self._on_closed = on_message, on_closed
        ctx = multiprocessing.get_context("spawn")  # no forked copy of the event loop or locks
        inbox_r, inbox_w = ctx.Pipe(duplex=False)
        outbox_r, outbox_w = ctx.Pipe(duplex=False)
        self._process = ctx.Process(
            target=worker_main,
            args=(inbox_r, outbox_w, self._device.env, self._n_threads, self._debug),
            name=f"corral-worker-{self._device.id}", daemon=True)
        self._process.start()
        inbox_r.close()  # only the worker holds these ends now, so its exit closes our pipe
        outbox_w.close()
        self._rx, self._tx = outbox_r, inbox_w
        # A worker busy with a long step reads late; buffer instead of blocking the event loop.
        os.set_blocking(inbox_w.fileno(), False)
        asyncio.get_running_loop().add_reader(outbox_r.fileno(), self._on_readable)

    def send(self, msg: protocol.ToWorker) -> None:
        if self._tx is None:
            return
        self._outbox += protocol.frame(msg)
        self._flush()

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
            self._on_closed()
            return
        if bool(self._outbox) != self._writer_armed:
            loop = asyncio.get_running_loop()
            if self._outbox:
                loop.add_writer(fd, self._flush)
            else:
                loop.remove_writer(fd)
            self._writer_armed = bool(self._outbox)

    def _on_readable(self) -> None:
        assert self._rx is not None
        try:
            data = os.read(self._rx.fileno(), 1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._on_closed()
            return
        for msg in self._reader.feed(data):
            self._on_message(msg)

    def kill(self) -> None:
        """SIGKILL (it works on a stopped process too); the closed pipe then reports the death."""
        if self._process is not None and self._process.is_alive():
            self._process.kill()

    def reap(self) -> str:
        self._close_pipes()
        if self._process is None:
            return "never started"
        # The pipe closes as the process dies, so a short wait reaps it; never stall the
        # event loop on a worker that closed its pipe but hangs: kill it.
        self._process.join(timeout=0.2)
        if self._process.is_alive():
            self._process.kill()
            self._process.join(timeout=1)
        return f"pid {self._process.pid}, exit code {self._process.exitcode}"

    async def stop(self) -> None:
        process = self._process
        if self._tx is not None:
            self._outbox += protocol.frame(protocol.Shutdown())
            self._flush()
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

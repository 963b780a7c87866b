"""Worker process entry point: owns one device, reads the pipe, runs engine steps.

The loop blocks on its inbox (and the side threads' wake-up pipe) while idle and only polls
them between steps while sequences are active; every message that arrived is handled before the
next step, so a Cancel frees its slot first. A closed pipe (the front end exited or was killed)
ends the process, and on Linux the kernel also delivers SIGKILL if the parent dies, so no worker
outlives its server.
"""

from __future__ import annotations

import ctypes
import faulthandler
import logging
import os
import select
import signal
from multiprocessing.connection import Connection

from workers import protocol

log = logging.getLogger("corral.worker")

_PR_SET_PDEATHSIG = 1


def run(inbox: Connection, outbox: Connection, device_env: dict[str, str], n_threads: int,
        debug: bool) -> None:
    # The front end decides when workers stop; Ctrl-C in a terminal reaches the whole process
    # group, and a worker that died on it would fail requests the server is still finishing.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    faulthandler.enable()  # a native crash in llama.cpp leaves a Python stack in the log
    _die_with_parent()
    os.environ.update(device_env)  # e.g. CUDA_VISIBLE_DEVICES, before llama.cpp is imported
    logging.basicConfig(level=logging.DEBUG if debug else logging.INFO,
                        format="%(asctime)s %(levelname)s worker[%(process)d] %(message)s")
    serve(inbox.fileno(), outbox.fileno(), n_threads, debug)


def serve(rx: int, tx: int, n_threads: int, debug: bool) -> None:
    """The step loop over two file descriptors, until the inbox closes or says Shutdown: the
    worker process runs it on its pipes, a Ray actor (workers/ray_actor.py) on a thread."""
    import llama_cpp as llama  # noqa: PLC0415 - only after the device environment is set

    from workers.engine import Engine  # noqa: PLC0415

    log_callback = _quiet_llama_logs(llama, debug)  # keep a reference: C holds the pointer
    llama.llama_backend_init()

    def send(msg: protocol.FromWorker) -> None:
        protocol.write_frame(tx, msg)

    engine = Engine(send, n_threads)
    reader = protocol.FrameReader()
    try:
        send(protocol.Ready(os.getpid(), bool(llama.llama_supports_gpu_offload())))
        while True:
            # Sleep while there is nothing to step: until a message or a built prompt. Between
            # steps only look.
            engine.poll()
            timeout = 0 if engine.has_work else None
            readable = select.select([rx, engine.side.wake_fd], [], [], timeout)[0]
            if engine.side.wake_fd in readable:
                engine.side.drain_wakeups()
            if rx in readable:
                data = os.read(rx, 1 << 20)
                if not data:
                    break  # the front end closed the pipe: it is gone
                messages = reader.feed(data)
                if any(isinstance(m, protocol.Shutdown) for m in messages):
                    break
                for msg in messages:  # all of them before the next step: a Cancel frees a slot
                    engine.handle(msg)
            if engine.has_work:
                engine.step()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the front end is gone; nothing left to answer
    finally:
        engine.close()
        del log_callback


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass  # not Linux: the closed pipe still ends the worker


def _quiet_llama_logs(llama, debug: bool):  # type: ignore[no-untyped-def]
    """Routes llama.cpp's log lines to Python logging; below warnings only with OLLAMA_DEBUG."""
    threshold = 1 if debug else 3  # ggml_log_level: 1 debug, 2 info, 3 warn, 4 error

    @llama.llama_log_callback
    def callback(level: int, text: bytes, _user: object) -> None:
        if level >= threshold and level != 5:  # 5 = continuation of the previous line
            log.log(logging.WARNING if level == 3 else logging.ERROR if level == 4 else logging.DEBUG,
                    "llama.cpp: %s", text.decode(errors="replace").rstrip())

    llama.llama_log_set(callback, ctypes.c_void_p(0))
    import llama_cpp.mtmd_cpp as mtmd  # noqa: PLC0415 - beside llama_cpp, as it is imported
    mtmd.mtmd_log_set(callback, ctypes.c_void_p(0))  # the projector's lines too
    mtmd.mtmd_helper_log_set(callback, ctypes.c_void_p(0))
    return callback

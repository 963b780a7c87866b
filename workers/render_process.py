"""A render process: renders its worker's prompt templates, one at a time, under limits.

Templates are client input and rendering them is pure Python. In a process of its own, a
rendering
- cannot take the worker's memory: the address space is capped (MemoryError here, never an
  OOM kill of the worker and its running streams);
- is charged its own CPU time (ITIMER_PROF), not the time it waited for a core behind other
  renderings;
- runs beside the engine without holding the GIL that the engine's thread needs between
  llama.cpp calls, and at a lower priority, so a slow template hardly slows decoding;
- can be stopped at once: the worker kills the process (a cancelled request, a render stuck in
  a C call past the wall-clock backstop) and starts another.

Run as `python -m workers.render_process`: Render frames on stdin, one Rendered or
RenderFailed frame for each on stdout (workers/protocol.py framing; nothing is pickled).
"""

from __future__ import annotations

import os
import resource
import signal
import sys
from types import FrameType

from workers import protocol
from workers.protocol import Render, RenderFailed, Rendered
from workers.template.render import TemplateError, render_prompt

MEMORY_LIMIT = 1 << 30  # address space: Python with gotpl and Jinja takes ~35 MB of it
NICENESS = 10  # below the engine: a render waits for a core, decoding does not


class _OutOfTime(BaseException):
    """Raised by the CPU timer. Not an Exception: gotpl and Jinja wrap those as template errors."""


def _out_of_time(_signum: int, _frame: FrameType | None) -> None:
    raise _OutOfTime


def render(req: Render) -> Rendered | RenderFailed:
    try:
        signal.setitimer(signal.ITIMER_PROF, req.cpu_seconds)
        try:
            return Rendered(render_prompt(
                req.template, req.messages, chat_template=req.chat_template, bos=req.bos,
                eos=req.eos, tools=req.tools, think=req.think, suffix=req.suffix))
        finally:
            signal.setitimer(signal.ITIMER_PROF, 0)
    except _OutOfTime:
        return RenderFailed(f"template rendering took longer than {req.cpu_seconds:g}s of CPU "
                            "time", "time")
    except TemplateError as exc:
        return RenderFailed(str(exc), "template")
    except RecursionError:
        return RenderFailed("template error: nested too deeply", "template")
    except MemoryError:
        return RenderFailed(f"template rendering needed more than {MEMORY_LIMIT >> 30} GiB of "
                            "memory", "memory")


def main() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))
    os.nice(NICENESS)
    signal.signal(signal.SIGPROF, _out_of_time)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the server to handle
    rx, tx = os.dup(0), os.dup(1)
    os.dup2(2, 1)  # a stray print goes to the log, never into the frames
    reader = protocol.FrameReader()
    while data := os.read(rx, 1 << 20):
        for request in reader.feed(data):
            reply = render(request)
            protocol.write_frame(tx, reply)
            if isinstance(reply, RenderFailed) and reply.kind == "memory":
                return  # a heap that hit its ceiling is not trusted with the next request


if __name__ == "__main__":
    sys.exit(main())

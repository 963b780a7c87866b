"""Where the front end's blocking work runs, so that no kind of request can hold it all.

- asyncio's default executor (`asyncio.to_thread`): short file work (manifests, blob checks,
  GGUF headers, device queries).
- `PARSING`: turning what a client sent into a request when it is too big to do on the event
  loop (a large JSON body, a Modelfile, a template to check). Its cost is bounded by the body
  and template caps; it has threads of its own so that a burst of big bodies never delays
  file work, and few of them, since parsing holds the GIL the event loop needs.

Prompts are never rendered here: only the workers' render processes do that.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, TypeVar

T = TypeVar("T")

PARSING_THREADS = 2
PARSING = ThreadPoolExecutor(PARSING_THREADS, thread_name_prefix="corral-parse")
PROBE_TIMEOUT = 2.0  # seconds a no-op may take on each: longer means its threads are all held


async def parse(fn: Callable[..., T], *args: object) -> T:
    return await asyncio.get_running_loop().run_in_executor(PARSING, functools.partial(fn, *args))


async def busy() -> list[str]:
    """The executors whose threads are all held (a no-op waited past PROBE_TIMEOUT)."""
    loop = asyncio.get_running_loop()
    names = ("file threads", "parsing threads")
    probes = [loop.run_in_executor(None, int), loop.run_in_executor(PARSING, int)]
    done, _ = await asyncio.wait(probes, timeout=PROBE_TIMEOUT)
    return [name for name, probe in zip(names, probes) if probe not in done]


async def finish(timeout: float, executors: tuple[ThreadPoolExecutor, ...] = (PARSING,)) -> bool:
    """Waits for the work on the front end's threads to end (the default executor's and
    `executors`'); False if some is still running after `timeout` (a read from a hung disk):
    the process must then exit without waiting for it."""
    loop = asyncio.get_running_loop()
    ended = [loop.create_future() for _ in executors]

    def shut(executor: ThreadPoolExecutor, future: asyncio.Future[None]) -> None:
        executor.shutdown(wait=True, cancel_futures=True)
        try:
            loop.call_soon_threadsafe(future.set_result, None)
        except RuntimeError:
            pass  # the loop is closed: nobody waits any more

    for executor, future in zip(executors, ended):
        threading.Thread(target=shut, args=(executor, future), daemon=True).start()
    try:
        await asyncio.wait_for(asyncio.gather(loop.shutdown_default_executor(), *ended), timeout)
    except asyncio.TimeoutError:
        return False
    return True

"""Tasks started and not awaited (a load, an unload, a watchdog, a restart)."""

from __future__ import annotations

import asyncio
from typing import Any, Coroutine


class Background:
    """Keeps each task referenced until it ends (the event loop holds only weak references),
    and cancels those still running at stop."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def cancel(self) -> None:
        for task in list(self._tasks):
            task.cancel()

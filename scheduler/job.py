"""A job: one request's hold on a runner slot, and the events the worker sends for it.

    async with job:              # leaving it cancels an unfinished job and frees the slot, once
        async for event in job:  # Started, Chunks, then the final Done
            ...

Events are the protocol's plain records (`Started`, `Chunk`, `Done`); a job the worker fails
raises `JobFailed` from the loop instead, so a handler never reads a raw worker message.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import TracebackType
from typing import Callable, Generic, TypeVar, Union

from scheduler.errors import JobFailed
from scheduler.runner import Runner
from scheduler.worker import WorkerDied
from workers import protocol

Final = TypeVar("Final", protocol.Done, protocol.Embedded)


@dataclass(eq=False)
class Job(Generic[Final]):
    id: int
    runner: Runner
    model: str  # the name it was asked for by (names sharing weights share a runner)
    load_duration: int  # ns it waited for its model to load
    final: type[Final]  # its last event: Done for a generation, Embedded for an embedding
    messages: asyncio.Queue[protocol.FromWorker | protocol.Chunk]
    on_end: Callable[[Job[Final]], None]  # gives the slot back
    finished: bool = field(default=False, init=False)

    def __aiter__(self) -> Job[Final]:
        return self

    async def __anext__(self) -> Union[protocol.Started, protocol.Chunk, Final]:
        if self.finished:
            raise StopAsyncIteration
        msg = await self.messages.get()
        if isinstance(msg, (protocol.Started, protocol.Chunk)):
            return msg
        self._end()
        if isinstance(msg, self.final):
            return msg
        if isinstance(msg, protocol.Failed):
            raise JobFailed(msg.message, bad_request=msg.kind == "bad_request")
        raise JobFailed(f"unexpected reply from the worker: {type(msg).__name__}")

    async def __aenter__(self) -> Job[Final]:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Ends the job early (client gone) or confirms its end; frees the slot once."""
        if self.finished:
            return
        try:
            self.runner.worker.send(protocol.Cancel(self.id))
        except WorkerDied:
            pass  # nothing left to cancel
        finally:
            self._end()

    def _end(self) -> None:
        self.finished = True
        self.on_end(self)


@dataclass(frozen=True)
class Embeddings:
    """What an embedding job gives: one vector per input, not yet normalized."""

    vectors: list[list[float]]
    prompt_eval_count: int
    load_duration: int  # ns

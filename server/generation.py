"""A generation's way from the scheduler's job to the handler's bodies.

The job gives events (scheduler/job.py: Started, Chunks, Done). Here each chunk's text is split
into thinking, content and tool calls (answer.py), the events are timed and counted for /metrics
and the access log, and the handler's body functions turn the parts into bodies: `chunk(parts)`
for each piece worth sending while streaming, `final(parts, done)` at the end (with the whole
text when not streaming). server/streaming.py frames what comes out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

from aiohttp import web

from scheduler.job import Job
from server import errors
from server.accesslog import TOKENS
from server.answer import Answer, Parts
from server.metrics import Generation
from workers import protocol

Body = dict[str, Any]
Bodies = Body | list[Body]  # a final answer may be several events (OpenAI's usage chunk)


@dataclass
class Run:
    """A generation handed to the scheduler, and the splitter for what it will say."""

    job: Job[protocol.Done]
    answer: Answer


async def bodies(request: web.Request, run: Run, stream: bool, chunk: Callable[[Parts], Bodies],
                 final: Callable[[Parts, protocol.Done], Bodies]) -> AsyncIterator[Body]:
    """The bodies of one generation, as its events come. A failed job raises the API error
    (server/errors.py); closing this iterator early cancels the job."""
    generation = Generation(request, run.job.model)
    held: list[str] = []  # not streaming: the text, for the one reply
    logprobs: list[protocol.Logprob] = []  # not streaming: the tokens' logprobs, for it too
    with errors.scheduler_errors():
        async with run.job as job:
            async for event in job:
                generation.saw(event)
                if isinstance(event, protocol.Started):
                    run.answer.started(event)
                elif isinstance(event, protocol.Chunk):
                    if not stream:
                        held.append(event.text)
                        logprobs += event.logprobs or ()
                        continue
                    parts = run.answer.feed(event.text)
                    parts.logprobs += event.logprobs or ()
                    if parts:  # else held back: a tag forming
                        for body in each_body(chunk(parts)):
                            yield body
                else:
                    request[TOKENS] = (event.prompt_eval_count, event.eval_count)
                    parts = (run.answer.feed("".join(held)) + run.answer.finish()
                             + Parts(logprobs=logprobs))
                    for body in each_body(final(parts, event)):
                        yield body


def with_logprobs(body: Body, parts: Parts) -> Body:
    """Ollama's `logprobs`, beside the message, when the request asked for them."""
    return {**body, "logprobs": parts.logprobs} if parts.logprobs else body


def final_stats(done: protocol.Done, load_duration: int, started: int) -> Body:
    """The counts and nanosecond durations of Ollama's last line."""
    return {
        "done_reason": done.done_reason,
        "total_duration": time.perf_counter_ns() - started,
        "load_duration": load_duration,
        "prompt_eval_count": done.prompt_eval_count,
        "prompt_eval_duration": done.prompt_eval_duration,
        "eval_count": done.eval_count,
        "eval_duration": done.eval_duration,
    }


def each_body(bodies: Bodies) -> list[Body]:
    return bodies if isinstance(bodies, list) else [bodies]

"""Turning a scheduler job into an HTTP answer: a stream of events (NDJSON lines for the
native API, server-sent events for /v1), or one JSON object.

The response is started lazily, on the first chunk, so a failure before any output (a template
error, a crashed worker) still gets a proper status code. After that, failures become a final
`{"error": ...}` line, as Ollama does. If the client goes away, aiohttp cancels the handler and
`job.close()` tells the worker to drop the sequence.
"""

from __future__ import annotations

import time
from contextlib import aclosing
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, AsyncIterator, Callable

import orjson
from aiohttp import web

from scheduler.scheduler import Job
from server import errors
from server.accesslog import TOKENS
from server.metrics import Generation
from workers import protocol

NDJSON = "application/x-ndjson"


def rfc3339(when: datetime) -> str:
    """A UTC time as Ollama writes it (RFC 3339 with a Z)."""
    return when.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def now_rfc3339() -> str:
    return rfc3339(datetime.now(timezone.utc))


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def final_stats(done: protocol.Done, load_duration: int, started: int) -> dict[str, Any]:
    return {
        "done_reason": done.done_reason,
        "total_duration": time.perf_counter_ns() - started,
        "load_duration": load_duration,
        "prompt_eval_count": done.prompt_eval_count,
        "prompt_eval_duration": done.prompt_eval_duration,
        "eval_count": done.eval_count,
        "eval_duration": done.eval_duration,
    }


@dataclass(frozen=True)
class Framing:
    """How a stream of JSON events goes on the wire: Ollama's NDJSON or OpenAI's SSE."""

    content_type: str
    encode: Callable[[Any], bytes]
    error: Callable[[str], Any]  # the event that reports a failure after the stream began
    end: bytes = b""  # written after the last event


NDJSON_FRAMING = Framing(NDJSON, lambda event: orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE),
                         lambda message: {"error": message})
SSE_FRAMING = Framing("text/event-stream", lambda event: b"data: " + orjson.dumps(event) + b"\n\n",
                      lambda message: {"error": {"message": message, "type": "api_error",
                                                 "param": None, "code": None}},
                      end=b"data: [DONE]\n\n")

Events = dict[str, Any] | list[dict[str, Any]]


async def respond(request: web.Request, job: Job, stream: bool,
                  chunk_body: Callable[[str], dict[str, Any] | None],
                  final_body: Callable[[str, protocol.Done], Events],
                  framing: Framing = NDJSON_FRAMING,
                  started: Callable[[protocol.Started], None] = lambda _: None
                  ) -> web.StreamResponse:
    """Streams `chunk_body(text)` per chunk (None: nothing to send yet) and `final_body(text,
    done)` (one event, or several) at the end, framed by `framing`; `started` hears that the
    worker built the prompt, before any text.

    `final_body` gets the whole text when not streaming (it goes in the one reply) and "" when
    streaming (the text was already sent).
    """
    async def receive() -> protocol.FromWorker:
        while isinstance(msg := await job.next(), protocol.Started):
            started(msg)
        generation.saw(msg)
        return msg

    def done(msg: protocol.Done) -> protocol.Done:
        request[TOKENS] = (msg.prompt_eval_count, msg.eval_count)
        return msg

    try:
        # Named now: a runner shared by several names of the same weights takes each job's name.
        generation = Generation(request, job.runner.ref.name)
        if not stream:
            parts: list[str] = []
            while True:
                msg = await receive()
                if isinstance(msg, protocol.Chunk):
                    parts.append(msg.text)
                elif isinstance(msg, protocol.Done):
                    return json_response(final_body("".join(parts), done(msg)))
                else:
                    raise errors.from_worker(msg)

        response: web.StreamResponse | None = None
        while not job.finished:
            msg = await receive()
            if not isinstance(msg, (protocol.Chunk, protocol.Done)) and response is None:
                raise errors.from_worker(msg)
            if isinstance(msg, protocol.Chunk):
                events: Events | None = chunk_body(msg.text)
            elif isinstance(msg, protocol.Done):
                events = final_body("", done(msg))
            else:
                events = framing.error(errors.from_worker(msg).message)
            if events is None:
                continue  # text held back (a tag or a tool call still forming)
            if response is None:
                response = web.StreamResponse(headers={"Content-Type": framing.content_type})
                await response.prepare(request)
            for event in events if isinstance(events, list) else [events]:
                await response.write(framing.encode(event))
        assert response is not None
        if framing.end:
            await response.write(framing.end)
        await response.write_eof()
        return response
    finally:
        job.close()


async def stream_events(request: web.Request, events: AsyncIterator[dict[str, Any]],
                        stream: bool) -> web.StreamResponse:
    """A long operation's progress events (create, pull, push) as NDJSON lines, or only the last
    one when not streaming. A failure before the first event is an HTTP error; after it, an
    `{"error": ...}` line, as Ollama does. Closing `events` on the way out stops the work when
    the client goes away."""
    async with aclosing(events):
        first = await anext(events)
        if not stream:
            last = first
            async for last in events:
                pass
            return json_response(last)
        response = web.StreamResponse(headers={"Content-Type": NDJSON_FRAMING.content_type})
        await response.prepare(request)
        await response.write(NDJSON_FRAMING.encode(first))
        try:
            async for event in events:
                await response.write(NDJSON_FRAMING.encode(event))
        except Exception as exc:  # noqa: BLE001 - events were sent; the error goes in the stream
            await response.write(NDJSON_FRAMING.encode(NDJSON_FRAMING.error(str(exc))))
        await response.write_eof()
        return response

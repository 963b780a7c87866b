"""Framing: a stream of JSON events on the wire (NDJSON lines for the native API, server-sent
events for /v1), or one JSON object.

The response is started lazily, on the first event, so a failure before any (a template error, a
crashed worker, a registry refusing) still gets a proper status code. After that, a failure
becomes a final error event, as Ollama does. If the client goes away, aiohttp cancels the
handler and closing the events stops the work behind them (a job is cancelled in the worker).
"""

from __future__ import annotations

from contextlib import aclosing
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable

import orjson
from aiohttp import web

NDJSON = "application/x-ndjson"


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


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


async def respond(request: web.Request, events: AsyncIterator[dict[str, Any]], stream: bool,
                  framing: Framing = NDJSON_FRAMING) -> web.StreamResponse:
    """`events` framed by `framing`, or only the last one as the reply when not streaming.
    Closing `events` on the way out stops the work behind them when the client goes away."""
    async with aclosing(events):
        if not stream:
            last = None
            async for last in events:
                pass
            return json_response(last)
        first = await anext(events)
        response = web.StreamResponse(headers={"Content-Type": framing.content_type})
        await response.prepare(request)
        await response.write(framing.encode(first))
        try:
            async for event in events:
                await response.write(framing.encode(event))
        except Exception as exc:  # noqa: BLE001 - events were sent; the error goes in the stream
            await response.write(framing.encode(framing.error(str(exc))))
        if framing.end:
            await response.write(framing.end)
        await response.write_eof()
        return response

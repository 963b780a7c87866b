"""One structured access-log line per request: method, path, status, model, prompt and eval
tokens, duration. A client that went away before the answer ended is logged as 499 (nginx's
"client closed request"), so a dashboard can tell it from a server error."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

log = logging.getLogger("corral.access")

MODEL = web.RequestKey("model", str)  # set by handlers that resolve a model
TOKENS = web.RequestKey("tokens", tuple)  # (prompt_eval_count, eval_count), set when a job ends
CLIENT_GONE = 499


async def answered(request: web.Request, handler: Handler,
                   record: Callable[[int, float], None]) -> web.StreamResponse:
    """Runs `handler` and hands `record` the status the request ended with (CLIENT_GONE when the
    client went away first) and the seconds it took, however the handler ended."""
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except (asyncio.CancelledError, ConnectionResetError):
        status = CLIENT_GONE
        raise
    finally:
        record(status, time.perf_counter() - started)


@web.middleware
async def access_log(request: web.Request, handler: Handler) -> web.StreamResponse:
    def write(status: int, seconds: float) -> None:
        prompt, generated = request.get(TOKENS, (None, None))
        log.info(orjson.dumps({
            "method": request.method, "path": request.path, "status": status,
            "model": request.get(MODEL), "prompt_tokens": prompt, "eval_tokens": generated,
            "duration_ms": round(seconds * 1000, 1), "remote": request.remote}).decode())

    return await answered(request, handler, write)

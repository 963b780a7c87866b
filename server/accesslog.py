"""One structured access-log line per request: method, path, status, model, prompt and eval
tokens, duration. A client that went away before the answer ended is logged as 499 (nginx's
"client closed request"), so a dashboard can tell it from a server error."""

from __future__ import annotations

import asyncio
import logging
import time

import orjson
from aiohttp import web

log = logging.getLogger("corral.access")

MODEL = web.RequestKey("model", str)  # set by handlers that resolve a model
TOKENS = web.RequestKey("tokens", tuple)  # (prompt_eval_count, eval_count), set when a job ends
CLIENT_GONE = 499


@web.middleware
async def access_log(request: web.Request, handler):  # type: ignore[no-untyped-def]
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
        prompt, generated = request.get(TOKENS, (None, None))
        log.info(orjson.dumps({
            "method": request.method, "path": request.path, "status": status,
            "model": request.get(MODEL), "prompt_tokens": prompt, "eval_tokens": generated,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
            "remote": request.remote}).decode())

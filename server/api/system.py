"""GET/HEAD / (the liveness probe clients use), GET /api/ready (readiness: every worker answers)
and GET /api/version."""

from __future__ import annotations

import asyncio

from aiohttp import web

from server import OLLAMA_VERSION, __version__, threads
from server.context import SCHEDULER
from server.streaming import json_response

# A worker answers a ping between two engine steps; a step takes milliseconds to a second.
PING_TIMEOUT = 5.0


async def root(request: web.Request) -> web.Response:
    return web.Response(text="Ollama is running")


async def version(request: web.Request) -> web.Response:
    """The Ollama version corral's API matches, and corral's own."""
    return json_response({"version": OLLAMA_VERSION, "corral": __version__})


async def ready(request: web.Request) -> web.Response:
    """200 when every worker's step loop answers and the front end's threads are free to take
    work; 503 naming what is not ready. (A front end whose event loop is stuck does not answer
    at all: the probe's own timeout tells that.)"""
    workers, busy = await asyncio.gather(request.app[SCHEDULER].probe(PING_TIMEOUT),
                                         threads.busy())
    stuck = [device for device, state in workers.items() if state not in ("ready", "loading")]
    front_end = f"{' and '.join(busy)} all busy" if busy else "ready"
    if stuck or busy:
        reasons = ([f"worker {', '.join(stuck)} is not ready"] if stuck else []) + (
            [f"the front end's {front_end}"] if busy else [])
        return json_response({"error": "; ".join(reasons), "front_end": front_end,
                              "workers": workers}, status=503)
    return json_response({"status": "ready", "front_end": front_end, "workers": workers})

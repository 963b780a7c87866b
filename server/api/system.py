"""GET/HEAD / (the liveness probe clients use), GET /api/ready (readiness: every worker answers)
and GET /api/version."""

from __future__ import annotations

from aiohttp import web

from server import __version__
from server.context import SCHEDULER
from server.streaming import json_response

# A worker answers a ping between two engine steps; a step takes milliseconds to a second.
PING_TIMEOUT = 5.0


async def root(request: web.Request) -> web.Response:
    return web.Response(text="Ollama is running")


async def version(request: web.Request) -> web.Response:
    return json_response({"version": __version__})


async def ready(request: web.Request) -> web.Response:
    """200 when every worker's step loop answers; 503 naming the ones that do not."""
    workers = await request.app[SCHEDULER].probe(PING_TIMEOUT)
    stuck = [device for device, state in workers.items() if state not in ("ready", "loading")]
    if stuck:
        return json_response({"error": f"worker {', '.join(stuck)} is not ready",
                              "workers": workers}, status=503)
    return json_response({"status": "ready", "workers": workers})

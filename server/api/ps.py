"""GET /api/ps: the models loaded right now."""

from __future__ import annotations

from datetime import datetime, timezone

from aiohttp import web

from server.context import SCHEDULER
from server.streaming import json_response
from server.timestamps import rfc3339


async def ps(request: web.Request) -> web.Response:
    """As Ollama's PsHandler: the longest time left to live first."""
    runners = sorted(request.app[SCHEDULER].snapshot().runners, key=lambda r: -r.expires_at)
    models = [{
        "name": runner.name,
        "model": runner.name,
        "size": runner.size,
        "digest": runner.digest,
        "details": runner.details,
        "expires_at": rfc3339(datetime.fromtimestamp(runner.expires_at, timezone.utc)),
        "size_vram": runner.size_vram,
        "context_length": runner.context_length,
    } for runner in runners]
    return json_response({"models": models})

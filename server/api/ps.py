"""GET /api/ps: the models loaded right now."""

from __future__ import annotations

from datetime import datetime, timezone

from aiohttp import web

from server.context import SCHEDULER
from server.streaming import json_response, rfc3339


async def ps(request: web.Request) -> web.Response:
    models = []
    for runner in request.app[SCHEDULER].running():
        ref = runner.ref
        models.append({
            "name": ref.name,
            "model": ref.name,
            "size": runner.size + runner.embed_size,
            "digest": ref.manifest_digest,
            "details": ref.details,
            "expires_at": rfc3339(datetime.fromtimestamp(runner.expires_at, timezone.utc)),
            "size_vram": runner.size_vram + (runner.embed_size if runner.size_vram else 0),
            "context_length": runner.num_ctx,
        })
    return json_response({"models": models})

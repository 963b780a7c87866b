"""GET/HEAD / (the liveness probe clients use) and GET /api/version."""

from __future__ import annotations

from aiohttp import web

from server import __version__
from server.streaming import json_response


async def root(request: web.Request) -> web.Response:
    return web.Response(text="Ollama is running")


async def version(request: web.Request) -> web.Response:
    return json_response({"version": __version__})

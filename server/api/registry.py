"""POST /api/pull and POST /api/push: models to and from an OCI registry (store/registry.py)."""

from __future__ import annotations

import os

from aiohttp import web

from server import errors
from server.context import STORE
from server.schemas import read_json
from server.streaming import respond
from store import registry
from store.model import name_field


async def pull(request: web.Request) -> web.StreamResponse:
    name, insecure, stream = await _request(request)
    login = registry.credentials(name.host, os.environ)
    return await respond(request, registry.pull(request.app[STORE], name, insecure, login),
                         stream)


async def push(request: web.Request) -> web.StreamResponse:
    name, insecure, stream = await _request(request)
    login = registry.credentials(name.host, os.environ)
    return await respond(request, registry.push(request.app[STORE], name, insecure, login),
                         stream)


async def _request(request: web.Request):  # type: ignore[no-untyped-def]
    body = await read_json(request)
    name = name_field(body.get("model") or body.get("name"))
    insecure, stream = body.get("insecure", False), body.get("stream", True)
    if not isinstance(insecure, bool) or not isinstance(stream, bool):
        raise errors.BadRequest('"insecure" and "stream" must be booleans')
    return name, insecure, stream

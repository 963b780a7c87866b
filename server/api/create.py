"""POST /api/create: a model from uploaded GGUF blobs or from another model."""

from __future__ import annotations

import orjson
from aiohttp import web

from server.context import STORE
from server.create import create_model
from server.schemas import CreateRequest, read_json
from server.streaming import NDJSON, json_response


async def create(request: web.Request) -> web.StreamResponse:
    req = CreateRequest.parse(await read_json(request))
    statuses = create_model(request.app[STORE], req)  # raises before any output on bad input
    if not req.stream:
        return json_response({"status": statuses[-1]})
    body = b"".join(orjson.dumps({"status": s}, option=orjson.OPT_APPEND_NEWLINE) for s in statuses)
    return web.Response(body=body, headers={"Content-Type": NDJSON})

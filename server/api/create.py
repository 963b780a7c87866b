"""POST /api/create: a model from an uploaded GGUF blob or from another model."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson
from aiohttp import web

from server.context import SETTINGS, STORE
from server.schemas import CreateRequest, read_json
from server.streaming import NDJSON, json_response
from store.create import Status, create_model


async def create(request: web.Request) -> web.StreamResponse:
    req = CreateRequest.parse(await read_json(request))
    spec = dataclasses.replace(req.spec, import_dirs=request.app[SETTINGS].import_dirs)
    statuses = create_model(request.app[STORE], spec)
    # The first status comes only after every check passed: a bad request is still a 400.
    first = await anext(statuses)
    if not req.stream:
        last = first
        async for last in statuses:
            pass
        return json_response(_event(last))
    response = web.StreamResponse(headers={"Content-Type": NDJSON})
    await response.prepare(request)
    await response.write(orjson.dumps(_event(first), option=orjson.OPT_APPEND_NEWLINE))
    try:
        async for status in statuses:
            await response.write(orjson.dumps(_event(status), option=orjson.OPT_APPEND_NEWLINE))
    except Exception as exc:  # noqa: BLE001 - the status line is sent; the error goes in the stream
        await response.write(orjson.dumps({"error": str(exc)}, option=orjson.OPT_APPEND_NEWLINE))
    await response.write_eof()
    return response


def _event(status: Status) -> dict[str, Any]:
    return {"status": status} if isinstance(status, str) else status

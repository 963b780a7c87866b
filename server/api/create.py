"""POST /api/create: a model from an uploaded GGUF blob, a server-side path the operator allowed,
or another model; from the fields or the older `modelfile` text; optionally quantized. The
statuses stream as the store produces them (store/create.py)."""

from __future__ import annotations

import dataclasses
from contextlib import aclosing
from typing import Any

from aiohttp import web

from server.context import SETTINGS, STORE
from server.schemas import CreateRequest, check_template, read_json
from server.streaming import NDJSON_FRAMING, json_response
from store.create import Status, create_model


async def create(request: web.Request) -> web.StreamResponse:
    req = CreateRequest.parse(await read_json(request))
    await check_template(req.spec.template)
    spec = dataclasses.replace(req.spec, import_dirs=request.app[SETTINGS].import_dirs)
    # aclosing: a client that goes away also stops the work (e.g. kills the quantizer).
    async with aclosing(create_model(request.app[STORE], spec)) as statuses:
        # The first status comes only after every check passed: a bad request is still a 400.
        first = await anext(statuses)
        if not req.stream:
            last = first
            async for last in statuses:
                pass
            return json_response(_event(last))
        response = web.StreamResponse(headers={"Content-Type": NDJSON_FRAMING.content_type})
        await response.prepare(request)
        await response.write(NDJSON_FRAMING.encode(_event(first)))
        try:
            async for status in statuses:
                await response.write(NDJSON_FRAMING.encode(_event(status)))
        except Exception as exc:  # noqa: BLE001 - statuses were sent; the error goes in the stream
            await response.write(NDJSON_FRAMING.encode(NDJSON_FRAMING.error(str(exc))))
        await response.write_eof()
        return response


def _event(status: Status) -> dict[str, Any]:
    return {"status": status} if isinstance(status, str) else status

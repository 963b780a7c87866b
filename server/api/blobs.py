"""HEAD and POST /api/blobs/sha256:<hex>: check for, and upload, a content-addressed blob."""

from __future__ import annotations

import asyncio

from aiohttp import web

from server.bodies import iter_body
from server.context import STORE
from store.store import normalize_digest


WRITE_SIZE = 4 << 20


def _digest(request: web.Request) -> str:
    return normalize_digest(request.match_info["digest"])


async def head_blob(request: web.Request) -> web.Response:
    found = request.app[STORE].has_blob(_digest(request))
    return web.Response(status=200 if found else 404)


async def push_blob(request: web.Request) -> web.Response:
    store = request.app[STORE]
    digest = _digest(request)
    if store.has_blob(digest):
        return web.Response(status=200)
    writer = store.blob_writer(digest)
    pending = bytearray()
    try:
        async for chunk in iter_body(request):
            pending += chunk
            if len(pending) >= WRITE_SIZE:  # hash and write off the event loop, in big pieces
                await asyncio.to_thread(writer.write, bytes(pending))
                pending.clear()
        await asyncio.to_thread(writer.write, bytes(pending))
    except BaseException:
        writer.abort()  # client went away or stalled mid-upload: nothing is kept
        raise
    await asyncio.to_thread(writer.commit)  # DigestMismatch is a 400
    return web.Response(status=201)

"""HEAD and POST /api/blobs/sha256:<hex>: check for, and upload, a content-addressed blob."""

from __future__ import annotations

from aiohttp import web

from server import errors
from server.context import STORE
from server.store import DigestMismatch, InvalidDigest, normalize_digest


def _digest(request: web.Request) -> str:
    try:
        return normalize_digest(request.match_info["digest"])
    except InvalidDigest as exc:
        raise errors.BadRequest(str(exc)) from None


async def head_blob(request: web.Request) -> web.Response:
    found = request.app[STORE].has_blob(_digest(request))
    return web.Response(status=200 if found else 404)


async def push_blob(request: web.Request) -> web.Response:
    store = request.app[STORE]
    digest = _digest(request)
    if store.has_blob(digest):
        return web.Response(status=200)
    writer = store.blob_writer(digest)
    try:
        async for chunk in request.content.iter_chunked(1 << 20):
            writer.write(chunk)
    except BaseException:
        writer.abort()  # client went away mid-upload: nothing is kept
        raise
    try:
        writer.commit()
    except DigestMismatch as exc:
        raise errors.BadRequest(str(exc)) from None
    return web.Response(status=201)

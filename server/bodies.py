"""Reading request bodies with an idle timeout, so a client that stalls mid-body cannot hold a
connection (and, for blob uploads, a growing partial file) for as long as it keeps the socket."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator

from aiohttp import web

from server import errors
from server.context import SETTINGS

CHUNK = 1 << 20
MAX_JSON_BODY = 64 << 20  # JSON bodies are read whole; blob uploads are streamed


class BodyTimeout(errors.APIError):
    status = 408

    def __init__(self, seconds: float) -> None:
        super().__init__(f"request body timed out: no data for {seconds:g}s")


async def iter_body(request: web.Request) -> AsyncIterator[bytes]:
    timeout = request.app[SETTINGS].body_idle_timeout
    while True:
        try:
            chunk = await asyncio.wait_for(request.content.readany(), timeout)
        except asyncio.TimeoutError:
            raise BodyTimeout(timeout) from None
        if not chunk:
            return
        yield chunk


async def read_body(request: web.Request) -> bytes:
    parts, size = [], 0
    async for chunk in iter_body(request):
        size += len(chunk)
        if size > MAX_JSON_BODY:
            raise errors.APIError(f"request body larger than {MAX_JSON_BODY >> 20} MiB", 413)
        parts.append(chunk)
    return b"".join(parts)

"""POST /api/create: a model from an uploaded GGUF blob, a server-side path the operator allowed,
or another model; from the fields or the older `modelfile` text; optionally quantized. The
statuses stream as the store produces them (store/create.py)."""

from __future__ import annotations

import dataclasses
import os
from contextlib import aclosing
from typing import Any, AsyncIterator

from aiohttp import web

from server.context import SETTINGS, STORE
from server.schemas import CreateRequest, check_template, read_request
from server.streaming import respond
from store import registry
from store.create import create_model
from store.names import ModelName


async def create(request: web.Request) -> web.StreamResponse:
    req = await read_request(request, CreateRequest.parse)
    await check_template(req.spec.template)
    spec = dataclasses.replace(req.spec, import_dirs=request.app[SETTINGS].import_dirs)
    store = request.app[STORE]

    def pull(name: ModelName) -> AsyncIterator[dict[str, Any]]:
        """A base model not here, pulled as Ollama's create pulls it (over TLS, with the
        registry's credentials where the environment gives them)."""
        return registry.pull(store, name, False, registry.credentials(name.host, os.environ))

    return await respond(request, _events(create_model(store, spec, pull)), req.stream)


async def _events(statuses: AsyncIterator[str | dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    async with aclosing(statuses):
        async for status in statuses:
            yield {"status": status} if isinstance(status, str) else status

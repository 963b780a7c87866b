"""GET /v1/models and GET /v1/models/{model}: the local models as OpenAI lists them."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from server import errors
from server.context import STORE
from server.streaming import json_response
from store.errors import InvalidName
from store.names import ModelName, parse_name
from store.store import Manifest


def _model(name: ModelName, manifest: Manifest) -> dict[str, Any]:
    return {"id": name.display, "object": "model", "created": int(manifest.modified_at.timestamp()),
            "owned_by": name.namespace}


async def list_models(request: web.Request) -> web.Response:
    # Reading every manifest is file work: a thread's, not the event loop's (hence the list:
    # list_manifests is a generator, which would otherwise be read here).
    listed = await asyncio.to_thread(lambda: list(request.app[STORE].list_manifests()))
    return json_response({"object": "list", "data": [_model(n, m) for n, m in listed]})


async def retrieve_model(request: web.Request) -> web.Response:
    text = request.match_info["model"]
    try:
        name = parse_name(text)
    except InvalidName:
        name = None
    manifest = await asyncio.to_thread(request.app[STORE].read_manifest, name) if name else None
    if name is None or manifest is None:
        raise errors.NotFound(f'model "{text}" not found')
    return json_response(_model(name, manifest))

"""GET /v1/models and GET /v1/models/{model}: the local models as OpenAI lists them."""

from __future__ import annotations

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
    models = [_model(name, manifest) for name, manifest in request.app[STORE].list_manifests()]
    return json_response({"object": "list", "data": models})


async def retrieve_model(request: web.Request) -> web.Response:
    text = request.match_info["model"]
    try:
        name = parse_name(text)
    except InvalidName:
        name = None
    manifest = request.app[STORE].read_manifest(name) if name else None
    if name is None or manifest is None:
        raise errors.NotFound(f'model "{text}" not found')
    return json_response(_model(name, manifest))

"""POST /v1/embeddings, through the native embedding path."""

from __future__ import annotations

import base64
from typing import Any

import numpy as np
from aiohttp import web

from server import errors
from server.api.embed import normalized, run_embed
from server.openai import fields
from server.schemas import EmbedRequest, read_json
from server.streaming import json_response


async def embeddings(request: web.Request) -> web.Response:
    body = await read_json(request)
    fields.check(body, fields.EMBEDDINGS)
    if body.get("input") in (None, "", []):
        raise errors.BadRequest("input must not be empty")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise errors.BadRequest('encoding_format must be "float" or "base64"')
    req = EmbedRequest.parse({"model": body.get("model"), "input": body["input"],
                              "dimensions": body.get("dimensions")}, token_ids=True)
    result = await run_embed(request, req)
    data = [{"object": "embedding", "index": i, "embedding": _encoded(vector, encoding)}
            for i, vector in enumerate(normalized(result.vectors, req.dimensions))]
    return json_response({"object": "list", "data": data, "model": req.model,
                          "usage": {"prompt_tokens": result.prompt_eval_count,
                                    "total_tokens": result.prompt_eval_count}})


def _encoded(vector: list[float], encoding: str) -> Any:
    """base64 is the little-endian float32 bytes, as OpenAI's API sends them."""
    if encoding == "float":
        return vector
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode()

"""POST /api/embed (normalized, batched input) and the legacy POST /api/embeddings."""

from __future__ import annotations

import math
import time

from aiohttp import web

from scheduler.job import Embeddings
from server import errors
from server.accesslog import TOKENS
from server.metrics import METRICS
from server.resolve import prepare
from server.schemas import (EMBED_FIELDS, EMBEDDINGS_FIELDS, EmbedRequest, only, read_json,
                            read_request, refuse_unknown, unknown_without_model)
from server.streaming import json_response


async def run_embed(request: web.Request, req: EmbedRequest) -> Embeddings:
    """The request's inputs embedded (mean-pooled, not yet normalized)."""
    # Ollama's embed handlers: 'model "x" not found, try pulling it first'
    p = await prepare(request, req.model, req.options, not_found=None)
    with errors.scheduler_errors():
        if not req.inputs:  # Ollama loads the model and answers with no vectors
            return Embeddings([], 0, await p.scheduler.load(p.ref, p.load, req.keep_alive))
        result = await p.scheduler.embed(p.ref, p.load, req.keep_alive, req.inputs, req.truncate)
    request[TOKENS] = (result.prompt_eval_count, 0)
    request.app[METRICS].count_tokens(p.ref.name, result.prompt_eval_count, 0)
    return result


def normalize(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in vector))
    return [v / norm for v in vector] if norm > 0 else vector


def normalized(vectors: list[list[float]], dimensions: int) -> list[list[float]]:
    """Each vector cut to `dimensions` (0: all) and scaled to unit length, as /api/embed gives."""
    return [normalize(v[:dimensions] if dimensions else v) for v in vectors]


async def embed(request: web.Request) -> web.Response:
    started = time.perf_counter_ns()
    req = await read_request(request, only(EMBED_FIELDS, unknown_without_model(EmbedRequest.parse)))
    result = await run_embed(request, req)
    return json_response({
        "model": req.model,
        "embeddings": normalized(result.vectors, req.dimensions),
        "total_duration": time.perf_counter_ns() - started,
        "load_duration": result.load_duration,
        "prompt_eval_count": result.prompt_eval_count,
    })


async def embeddings(request: web.Request) -> web.Response:
    body = await read_json(request)
    prompt = body.pop("prompt", "")
    if not isinstance(prompt, str):
        raise errors.BadRequest('"prompt" must be a string')
    req = EmbedRequest.parse({**body, "input": [prompt] if prompt else []})
    refuse_unknown(body, EMBEDDINGS_FIELDS)
    vectors = (await run_embed(request, req)).vectors
    return json_response({"embedding": vectors[0] if vectors else []})

"""POST /api/embed (normalized, batched input) and the legacy POST /api/embeddings."""

from __future__ import annotations

import math
import time

from aiohttp import web

from server import errors
from server.accesslog import TOKENS
from server.api.inference import prepare
from server.metrics import METRICS
from server.schemas import EmbedRequest, read_json, read_request
from server.streaming import json_response
from workers import protocol


async def run_embed(request: web.Request, req: EmbedRequest) -> tuple[protocol.Embedded, int]:
    """The request's inputs embedded (mean-pooled, not yet normalized) and the load duration."""
    p = await prepare(request, req.model, req.options)
    with errors.scheduler_errors():
        if not req.inputs:  # Ollama loads the model and answers with no vectors
            load_duration = await p.scheduler.load(p.ref, p.num_ctx, req.keep_alive)
            return protocol.Embedded(0, [], 0), load_duration
        reply, load_duration = await p.scheduler.embed(p.ref, p.num_ctx, req.keep_alive,
                                                       req.inputs, req.truncate)
    if isinstance(reply, protocol.Failed):
        raise errors.from_worker(reply)
    assert isinstance(reply, protocol.Embedded)
    request[TOKENS] = (reply.prompt_eval_count, 0)
    request.app[METRICS].count_tokens(p.ref.name, reply.prompt_eval_count, 0)
    return reply, load_duration


def normalize(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(v * v for v in vector))
    return [v / norm for v in vector] if norm > 0 else vector


def normalized(vectors: list[list[float]], dimensions: int) -> list[list[float]]:
    """Each vector cut to `dimensions` (0: all) and scaled to unit length, as /api/embed gives."""
    return [normalize(v[:dimensions] if dimensions else v) for v in vectors]


async def embed(request: web.Request) -> web.Response:
    started = time.perf_counter_ns()
    req = await read_request(request, EmbedRequest.parse)
    reply, load_duration = await run_embed(request, req)
    return json_response({
        "model": req.model,
        "embeddings": normalized(reply.embeddings, req.dimensions),
        "total_duration": time.perf_counter_ns() - started,
        "load_duration": load_duration,
        "prompt_eval_count": reply.prompt_eval_count,
    })


async def embeddings(request: web.Request) -> web.Response:
    body = await read_json(request)
    prompt = body.get("prompt", "")
    if not isinstance(prompt, str):
        raise errors.BadRequest('"prompt" must be a string')
    req = EmbedRequest.parse({**body, "input": [prompt] if prompt else []})
    reply, _ = await run_embed(request, req)
    return json_response({"embedding": reply.embeddings[0] if reply.embeddings else []})

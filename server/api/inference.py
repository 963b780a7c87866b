"""What /api/generate, /api/chat and /api/embed share: model resolution, options, load/unload."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from scheduler.memory import ModelMemory
from scheduler.scheduler import Job, ModelRef, Scheduler
from server import errors
from server.accesslog import MODEL
from server.answer import Answer, Parts
from server.context import SCHEDULER, SETTINGS, STORE
from server.streaming import json_response, now_rfc3339
from store.gguf import GGUFInfo, cached_info
from store.model import ModelSpec, details, resolve
from store.store import Store
from workers import options
from workers.options import RequestOptions
from workers.template.analysis import analyze


@dataclass
class Prepared:
    spec: ModelSpec
    ref: ModelRef
    sampling: RequestOptions
    num_ctx: int
    scheduler: Scheduler


async def prepare(request: web.Request, model: str, request_options: dict[str, Any]) -> Prepared:
    """The model resolved (its manifest, layers and GGUF header read off the event loop) and
    the options merged."""
    request[MODEL] = model
    spec, ref = await asyncio.to_thread(_resolved, request.app[STORE], model)
    try:
        sampling, load = options.merge(spec.params, request_options,
                                       request.app[SETTINGS].context_length)
    except options.InvalidOption as exc:
        raise errors.BadRequest(str(exc)) from None
    # As Ollama does: never allocate more context than the model was trained for.
    num_ctx = min(load["num_ctx"], ref.context_length or load["num_ctx"])
    return Prepared(spec, ref, sampling, num_ctx, request.app[SCHEDULER])


def _resolved(store: Store, model: str) -> tuple[ModelSpec, ModelRef]:
    spec = resolve(store, model)
    return spec, model_ref(spec)


def model_ref(spec: ModelSpec) -> ModelRef:
    """What the scheduler needs to know of a stored model (it never reads the store itself)."""
    info = cached_info(str(spec.model_path))
    adapters = tuple(str(p) for p in spec.adapter_paths)
    return ModelRef(
        name=spec.name.display,
        # Weights with other adapters are another model: they must not share a runner.
        digest="+".join([spec.digest, *(p.name for p in spec.adapter_paths)]),
        manifest_digest=spec.manifest.digest,
        path=str(spec.model_path),
        memory=model_memory(info),
        context_length=info.context_length,
        n_vocab=info.n_vocab,
        details=details(spec.config),
        adapters=adapters,
    )


def model_memory(info: GGUFInfo) -> ModelMemory:
    """The sizes the scheduler's memory estimate starts from (scheduler/memory.py)."""
    tensors = info.tensor_bytes
    return ModelMemory(
        layers=tensors.layers(),
        input_bytes=tensors.token_embd,
        output_bytes=tensors.rest,
        tied_output=tensors.tied_output,
        kv_bytes_per_cell=info.kv_bytes_per_token,
        n_embd=info.embedding_length,
        n_head=info.head_count,
        n_vocab=info.n_vocab,
    )


@dataclass
class Run:
    """A generation handed to the scheduler, and the splitter for what it will say."""

    job: Job
    answer: Answer


def answer(model: str, template: str, think: bool | str | None,
           tools: list[dict[str, Any]] | None = None) -> Answer:
    """The splitter for this request's output; 400 where the model's template cannot do what
    the request asks (Ollama's messages). Parses the template (once; it is cached): not on the
    event loop."""
    info = analyze(template)
    if tools and not info.tools:
        raise errors.BadRequest(f'"{model}" does not support tools')
    if think and not info.thinking:
        raise errors.BadRequest(f'"{model}" does not support thinking')
    return Answer(template, bool(think), tools or [])


def message(parts: Parts) -> dict[str, Any]:
    """An assistant message as /api/chat writes it: thinking and tool calls only when present."""
    body: dict[str, Any] = {"role": "assistant", "content": parts.content}
    if parts.thinking:
        body["thinking"] = parts.thinking
    if parts.tool_calls:
        body["tool_calls"] = parts.tool_calls
    return body


async def load_or_unload(p: Prepared, model: str, keep_alive: float | None,
                         empty: dict[str, Any]) -> web.Response:
    """An empty prompt loads the model; with keep_alive 0 it unloads it instead."""
    if keep_alive == 0:
        await p.scheduler.unload(p.ref.digest)
        reason = "unload"
    else:
        with errors.scheduler_errors():
            await p.scheduler.load(p.ref, p.num_ctx, keep_alive)
        reason = "load"
    return json_response({"model": model, "created_at": now_rfc3339(), **empty,
                          "done": True, "done_reason": reason})

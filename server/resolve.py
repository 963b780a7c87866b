"""What a generation or embedding request needs before the scheduler sees it: the model resolved
in the store and described as a `ModelRef` (the scheduler never reads the store), and the
options merged (defaults < Modelfile < request) into per-request and load options."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web

from scheduler.memory import ModelMemory, kv_cell_scale, logits_bytes
from scheduler.runner import ModelRef
from scheduler.scheduler import Scheduler
from server import errors
from server.accesslog import MODEL
from server.context import SCHEDULER, SETTINGS, STORE
from store import errors as store_errors
from store.gguf import GGUFInfo, cached_info
from store.model import ModelSpec, capabilities, details, resolve
from store.projector import check_projector
from store.store import Store
from workers import options
from workers.options import LoadOptions, RequestOptions
from workers.protocol import DRAFT_UBATCH, ChatMessage

MIN_CONTEXT, MIN_VISION_CONTEXT = 4, 2048  # Ollama's floors for num_ctx (server/sched.go)


@dataclass
class Prepared:
    spec: ModelSpec
    ref: ModelRef
    options: RequestOptions  # travel with each request to the worker
    load: LoadOptions  # what the runner serving it must have been loaded with
    scheduler: Scheduler
    capabilities: list[str]  # as /api/show lists them

    def require_completion(self, model: str, endpoint: str) -> None:
        """400 for generating with a model that only embeds (Ollama's words)."""
        if "completion" not in self.capabilities:
            raise errors.BadRequest(f'"{model}" does not support {endpoint}')

    def think(self, asked: bool | str | None) -> bool | str | None:
        """The request's `think`; where it says nothing, on for a model that can think, as
        Ollama's handlers turn it on for every such model (routes.go)."""
        return True if asked is None and "thinking" in self.capabilities else asked

    def require_vision(self, model: str, messages: list[ChatMessage]) -> None:
        """400 for images to a model without a projector."""
        if not self.ref.projector and any(m.get("images") for m in messages):
            raise errors.BadRequest(f'"{model}" does not support images')


# What an unknown model is, in Ollama's words: its generate and chat handlers' (which its /v1
# and Anthropic routes pass on); its embed handlers say what store/errors.py does.
NOT_FOUND = "model '{}' not found"


async def prepare(request: web.Request, model: str, request_options: dict[str, Any],
                  not_found: str | None = NOT_FOUND) -> Prepared:
    """The model resolved (its manifest, layers and GGUF header read off the event loop) and
    the options merged; `not_found`: the 404's text for an unknown model (None: the store's)."""
    request[MODEL] = model
    settings = request.app[SETTINGS]
    try:
        spec, ref, capabilities = await asyncio.to_thread(_resolved, request.app[STORE], model,
                                                          settings.kv_cache_type)
    except store_errors.NotFound as exc:
        raise errors.NotFound(str(exc) if not_found is None else not_found.format(model)) from None
    try:
        per_request, load = options.merge(spec.params, request_options,
                                          settings.context_length)
    except options.InvalidOption as exc:
        raise errors.BadRequest(str(exc)) from None
    # As Ollama's scheduler does: at least 4 cells (llama.cpp aborts the worker below that),
    # 2048 for a model that takes images, and no more than the model was trained for.
    num_ctx = max(load["num_ctx"], MIN_VISION_CONTEXT if ref.projector else MIN_CONTEXT)
    load["num_ctx"] = max(MIN_CONTEXT, min(num_ctx, ref.context_length or num_ctx))
    return Prepared(spec, ref, per_request, load, request.app[SCHEDULER], capabilities)


def _resolved(store: Store, model: str,
              kv_cache_type: str) -> tuple[ModelSpec, ModelRef, list[str]]:
    spec = resolve(store, model)
    metadata = cached_info(str(spec.model_path)).metadata
    if spec.projector_path is not None:  # a pulled one was never checked, and llama.cpp aborts
        # the worker on a key of a type it does not expect
        check_projector(cached_info(str(spec.projector_path)), spec.name.display)
    return spec, model_ref(spec, kv_cache_type), capabilities(
        spec.template, metadata, projector=spec.projector_path is not None)


def model_ref(spec: ModelSpec, kv_cache_type: str = "f16") -> ModelRef:
    """What the scheduler needs to know of a stored model, its KV cells in the server's type."""
    info = cached_info(str(spec.model_path))
    adapters = tuple(str(p) for p in spec.adapter_paths)
    projector, draft = spec.projector_path, spec.draft_path
    memory = model_memory(info, kv_cell_scale(kv_cache_type),
                          projector.stat().st_size if projector else 0)
    if draft is not None:
        draft_info = cached_info(str(draft))
        # Its weights and its compute buffer, which holds logits for DRAFT_UBATCH tokens.
        compute = logits_bytes(draft_info.n_vocab, draft_info.embedding_length, DRAFT_UBATCH)
        memory = replace(memory, draft_bytes=draft.stat().st_size + compute,
                         draft_kv_bytes_per_cell=round(draft_info.kv_bytes_per_token
                                                       * kv_cell_scale(kv_cache_type)))
    return ModelRef(
        name=spec.name.display,
        # Weights with other adapters (or projector, or draft) are another model: they must not
        # share a runner.
        digest="+".join([spec.digest, *(p.name for p in spec.adapter_paths),
                         *(p.name for p in (projector, draft) if p)]),
        manifest_digest=spec.manifest.digest,
        path=str(spec.model_path),
        memory=memory,
        context_length=info.context_length,
        n_vocab=info.n_vocab,
        details=details(spec.config),
        adapters=adapters,
        projector=str(projector or ""),
        draft=str(draft or ""),
    )


def model_memory(info: GGUFInfo, kv_scale: float = 1.0, projector_bytes: int = 0) -> ModelMemory:
    """The sizes the scheduler's memory estimate starts from (scheduler/memory.py)."""
    tensors = info.tensor_bytes
    return ModelMemory(
        layers=tensors.layers(),
        input_bytes=tensors.token_embd,
        output_bytes=tensors.rest,
        tied_output=tensors.tied_output,
        kv_bytes_per_cell=round(info.kv_bytes_per_token * kv_scale),
        projector_bytes=projector_bytes,
        n_embd=info.embedding_length,
        n_head=info.head_count,
        n_vocab=info.n_vocab,
    )

"""The local model list and its management: GET /api/tags, POST /api/show, POST /api/copy,
DELETE /api/delete."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, Callable, Hashable

import orjson
from aiohttp import web

from server import errors
from server.context import STORE
from server.schemas import read_json
from server.streaming import json_response
from server.timestamps import rfc3339
from store import errors as store_errors
from store.gguf import GGUFInfo, cached_info, read_gguf
from store.model import capabilities, details, listed, name_field, read_config, resolve
from store.modelfile import format_modelfile
from store.store import Store


class TagsCache:
    """The /api/tags body, built once and served until the store changes. A write by this
    process (create, pull, copy, delete) bumps the store's generation and is listed by the
    next request; a change by another process (an Ollama user copying manifests in by hand)
    shows in the store's fingerprint, checked on a thread at most every REVALIDATE_S.
    Requests that find it stale share one check."""

    REVALIDATE_S = 1.0

    def __init__(self, store: Store, clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._clock = clock
        self._body = b""
        self._generation = -1  # the store's generation the body was built at
        self._fingerprint: Hashable = None
        self._checked = float("-inf")  # clock() at the last fingerprint check
        self._check: asyncio.Future[None] | None = None

    async def body(self) -> bytes:
        wanted = self._store.generation
        while (self._generation < wanted
               or self._clock() - self._checked >= self.REVALIDATE_S):
            if self._check is None:
                self._check = asyncio.ensure_future(self._revalidate())
            # Shielded: a waiter that goes away must not cancel the others' check.
            await asyncio.shield(self._check)
        return self._body

    async def _revalidate(self) -> None:
        try:
            generation = self._store.generation  # read first: a write during the check is seen
            self._fingerprint, body = await asyncio.to_thread(self._rebuilt, generation)
            self._checked, self._generation = self._clock(), generation
            if body is not None:
                self._body = body
        finally:
            self._check = None

    def _rebuilt(self, generation: int) -> tuple[Hashable, bytes | None]:
        """The fingerprint, and the new body unless nothing changed (a thread's work)."""
        fingerprint = self._store.fingerprint()  # before the listing, for the same reason
        if fingerprint == self._fingerprint and generation == self._generation:
            return fingerprint, None
        return fingerprint, orjson.dumps({"models": _local_models(self._store)})


TAGS = web.AppKey("tags", TagsCache)


async def tags(request: web.Request) -> web.Response:
    return web.Response(body=await request.app[TAGS].body(), content_type="application/json")


def _local_models(store: Store) -> list[dict[str, Any]]:
    """Every stored model, newest first (reads each manifest, config and GGUF header)."""
    models = []
    for name, manifest in store.list_manifests():
        info, caps = listed(store, manifest, read_config(store, manifest))
        models.append({"name": name.display, "model": name.display,
                       "modified_at": rfc3339(manifest.modified_at), "size": manifest.size,
                       "digest": manifest.digest, "details": info,
                       **({"capabilities": caps} if caps else {})})
    return sorted(models, key=lambda m: m["modified_at"], reverse=True)


async def show(request: web.Request) -> web.Response:
    body = await read_json(request)
    model = body.get("model") or body.get("name")
    if not isinstance(model, str) or not model:
        raise errors.BadRequest("model is required")
    try:
        spec = await asyncio.to_thread(resolve, request.app[STORE], model)
    except store_errors.NotFound:
        raise errors.NotFound(f"model '{model}' not found") from None
    verbose = body.get("verbose") is True
    # A verbose header holds every vocabulary entry (262k for Gemma): read it off the event loop.
    info = await asyncio.to_thread(_header, spec.model_path, verbose)
    projector = spec.projector_path
    # As Ollama's GetModelInfo: the request's system shows in what it returns, and the name
    # and the chat template are left out of model_info.
    system = body.get("system") if isinstance(body.get("system"), str) and body["system"] \
        else spec.system
    model_info = {k: v for k, v in info.metadata.items()
                  if k not in ("general.name", "tokenizer.chat_template")}
    reply: dict[str, Any] = {
        "license": "\n".join(spec.licenses),
        "modelfile": format_modelfile(str(spec.model_path), name=spec.name.display,
                                      template=spec.template, system=system,
                                      parameters=spec.params,
                                      messages=spec.messages,
                                      licenses=spec.licenses,
                                      adapters=[str(p) for p in spec.adapter_paths],
                                      projectors=[str(projector)] if projector else [],
                                      draft=str(spec.draft_path) if spec.draft_path else None),
        "parameters": parameters_text(spec.params),
        "template": spec.template,
        "system": system,
        "details": details(spec.config),
        "model_info": model_info,  # long arrays are [] unless verbose, as in Ollama
        "tensors": [{"name": t.name, "type": t.type, "shape": list(t.shape)}
                    for t in info.tensors],
        "projector_info": (await asyncio.to_thread(_header, projector, verbose)).metadata
        if projector else None,
        "capabilities": capabilities(spec.template, info.metadata, projector=bool(projector)),
        "modified_at": rfc3339(spec.manifest.modified_at),
        "requires": spec.config.get("requires"),
    }
    if spec.messages:
        reply["messages"] = spec.messages
    return json_response({k: v for k, v in reply.items() if v not in ("", None)})


def _header(path: Path, verbose: bool) -> GGUFInfo:
    """A stored GGUF's header; verbose: with its long arrays (a thread's work)."""
    return read_gguf(path, True) if verbose else cached_info(str(path))


def parameters_text(params: dict[str, Any]) -> str:
    """`key value` lines as `ollama show --parameters` prints them (one line per stop)."""
    lines = []
    for key in sorted(params):
        values = params[key] if isinstance(params[key], list) else [params[key]]
        lines += [f"{key:<30} {orjson.dumps(v).decode()}" for v in values]
    return "\n".join(lines)


async def copy(request: web.Request) -> web.Response:
    body = await read_json(request)
    source = name_field(body.get("source"), "source")
    destination = name_field(body.get("destination"), "destination")
    if not await asyncio.to_thread(request.app[STORE].copy_manifest, source, destination):
        raise errors.NotFound(f'model "{body["source"]}" not found')
    return web.Response(status=200)


async def delete(request: web.Request) -> web.Response:
    body = await read_json(request)
    text = body.get("model") or body.get("name")
    name = name_field(text, "name")  # Ollama's DeleteHandler: name "x" is invalid
    if not await asyncio.to_thread(request.app[STORE].delete_manifest, name):
        raise errors.NotFound(f"model '{text}' not found")
    return web.Response(status=200)

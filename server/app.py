"""The aiohttp application: routes, middleware, and start/stop of the scheduler."""

from __future__ import annotations

from dataclasses import replace

from aiohttp import web

from scheduler.placement import auto_context_length
from scheduler.scheduler import Scheduler
from server import security
from server.api import (blobs, chat, create, embed, generate, metrics, models, openapi, ps,
                        registry, system)
from server.accesslog import access_log
from server.anthropic import messages as anthropic_messages
from server.bodies import MAX_JSON_BODY
from server.context import SCHEDULER, SETTINGS, STORE
from server.errors import error_middleware
from server.metrics import METRICS, Metrics, count_requests
from server.openai import chat as openai_chat
from server.openai import embeddings as openai_embeddings
from server.openai import models as openai_models
from server.openai import responses as openai_responses
from server.settings import Settings
from store.store import Store


def build_app(settings: Settings, store: Store, scheduler: Scheduler) -> web.Application:
    # Bodies are read through server/bodies.py, which bounds JSON bodies and streams uploads.
    # Origin, Host and API key checks come before the handlers: a refused request never reaches
    # one, but is still logged and counted.
    app = web.Application(middlewares=[access_log, count_requests,
                                       *security.middlewares(settings), error_middleware],
                          client_max_size=MAX_JSON_BODY)
    security.install(app, settings)
    if not settings.context_length:  # Ollama's automatic default, by the GPUs' memory
        settings = replace(settings, context_length=auto_context_length(
            scheduler.devices(), settings.gpu_overhead))
    app[SETTINGS] = settings
    app[STORE] = store
    app[models.TAGS] = models.TagsCache(store)
    app[SCHEDULER] = scheduler
    app[METRICS] = Metrics()
    app.router.add_get("/", system.root)  # aiohttp answers HEAD for GET routes too
    app.router.add_get("/api/version", system.version)
    app.router.add_get("/api/ready", system.ready)
    app.router.add_get("/api/openapi.json", openapi.document)
    app.router.add_get("/metrics", metrics.metrics)
    app.router.add_post("/api/generate", generate.generate)
    app.router.add_post("/api/chat", chat.chat)
    app.router.add_post("/api/embed", embed.embed)
    app.router.add_post("/api/embeddings", embed.embeddings)
    app.router.add_post("/api/create", create.create)
    app.router.add_post("/api/pull", registry.pull)
    app.router.add_post("/api/push", registry.push)
    app.router.add_get("/api/tags", models.tags)
    app.router.add_post("/api/show", models.show)
    app.router.add_post("/api/copy", models.copy)
    app.router.add_delete("/api/delete", models.delete)
    app.router.add_get("/api/ps", ps.ps)
    app.router.add_route("HEAD", "/api/blobs/{digest}", blobs.head_blob)
    app.router.add_post("/api/blobs/{digest}", blobs.push_blob)
    app.router.add_post("/v1/chat/completions", openai_chat.chat_completions)
    app.router.add_post("/v1/completions", openai_chat.completions)
    app.router.add_post("/v1/embeddings", openai_embeddings.embeddings)
    app.router.add_post("/v1/responses", openai_responses.responses)
    app.router.add_get("/v1/models", openai_models.list_models)
    app.router.add_get("/v1/models/{model:.+}", openai_models.retrieve_model)
    app.router.add_post("/v1/messages", anthropic_messages.messages)

    async def stop_admitting(app: web.Application) -> None:
        await app[SCHEDULER].stop_admitting()

    async def stop_workers(app: web.Application) -> None:
        await app[SCHEDULER].stop()

    app.on_shutdown.append(stop_admitting)
    app.on_cleanup.append(stop_workers)
    return app

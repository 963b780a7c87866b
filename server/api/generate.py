"""POST /api/generate: a completion for one prompt; an empty prompt loads (or unloads) the model."""

from __future__ import annotations

import time

from aiohttp import web

from server import errors, threads
from server.answer import Parts, answer_for
from server.generation import Body, Run, bodies, final_stats, with_logprobs
from server.resolve import Prepared, prepare
from server.schemas import (GENERATE_FIELDS, GenerateRequest, check_template, only,
                            read_request, unknown_without_model)
from server.streaming import json_response, respond
from server.timestamps import now_rfc3339
from workers import protocol
from workers.protocol import ChatMessage, PromptSpec


async def generate(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter_ns()
    req = await read_request(request, only(GENERATE_FIELDS,
                                           unknown_without_model(GenerateRequest.parse)))
    p = await prepare(request, req.model, req.options)
    if not req.prompt and not req.context:
        return await load_or_unload(p, req.model, req.keep_alive, {"response": ""}, "generate")
    run = await submit_generate(p, req)

    def body(parts: Parts) -> Body:
        reply = {"model": req.model, "created_at": now_rfc3339(), "response": parts.content}
        if parts.thinking:
            reply["thinking"] = parts.thinking
        return with_logprobs(reply, parts)

    def chunk(parts: Parts) -> Body:
        return {**body(parts), "done": False}

    def final(parts: Parts, done: protocol.Done) -> Body:
        context = {} if req.raw else {"context": done.context}  # as Ollama: none for raw
        return {**body(parts), "done": True, **context,
                **final_stats(done, run.job.load_duration, started)}

    return await respond(request, bodies(request, run, req.stream, chunk, final), req.stream)


async def submit_generate(p: Prepared, req: GenerateRequest) -> Run:
    """The prompt (templated unless raw, after any `context`) handed to the scheduler."""
    p.require_completion(req.model, "generate")
    if req.raw and (req.template or req.system or req.context):
        raise errors.BadRequest("raw mode does not support template, system, or context")
    out_of_range = next((t for t in req.context if p.ref.n_vocab and t >= p.ref.n_vocab), None)
    if out_of_range is not None:
        raise errors.BadRequest(f'"context" holds token {out_of_range}, out of range for this '
                                f"model (0 to {p.ref.n_vocab - 1})")
    await check_template(req.template)
    template = req.template or p.spec.template
    if req.suffix and "insert" not in p.capabilities:  # as Ollama: the model's own template
        raise errors.BadRequest(f"{p.spec.name.full} does not support insert")
    messages: list[ChatMessage] = []
    think = p.think(req.think)
    if req.raw and req.images:
        raise errors.BadRequest("raw mode does not support images: the template places them")
    if req.raw:
        prompt: PromptSpec = {"raw": req.prompt, "messages": [], "template": "",
                              "context": req.context, "truncate": req.truncate}
    else:
        system = req.system or p.spec.system
        if system:
            messages.append({"role": "system", "content": system})
        if not req.context:  # Modelfile MESSAGEs start a conversation, not a continued one
            messages += [{"role": m["role"], "content": m["content"]} for m in p.spec.messages]
        user: ChatMessage = {"role": "user", "content": req.prompt}
        if req.images:
            user["images"] = req.images
        messages.append(user)
        p.require_vision(req.model, messages)
        prompt = {"raw": None, "messages": messages, "template": template,
                  "context": req.context, "think": think, "suffix": req.suffix,
                  "truncate": req.truncate}
    # As Ollama: the model's own template says whether it thinks and with which tags.
    output = await threads.parse(answer_for, req.model, p.spec.name.full, p.spec.template, think)
    with errors.scheduler_errors():
        job = await p.scheduler.submit(p.ref, p.load, req.keep_alive, prompt, p.options,
                                       want_context=not req.raw, output_format=req.format,
                                       logprobs=req.logprobs, shift=req.shift)
    return Run(job, output)


async def load_or_unload(p: Prepared, model: str, keep_alive: float | None,
                         empty: Body, endpoint: str) -> web.Response:
    """An empty prompt (or chat) loads the model; with keep_alive 0 it unloads it instead.
    As Ollama's handlers, only a model that can answer `endpoint` is loaded so (an embedding
    model is a 400), while any model unloads."""
    if keep_alive == 0:
        await p.scheduler.unload(p.ref.digest)
        reason = "unload"
    else:
        p.require_completion(model, endpoint)
        with errors.scheduler_errors():
            await p.scheduler.load(p.ref, p.load, keep_alive)
        reason = "load"
    return json_response({"model": model, "created_at": now_rfc3339(), **empty,
                          "done": True, "done_reason": reason})

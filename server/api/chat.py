"""POST /api/chat: the next assistant message of a conversation."""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from server import errors, threads
from server.api.inference import Prepared, Run, answer, load_or_unload, message, prepare
from server.schemas import ChatRequest, read_request
from server.streaming import final_stats, now_rfc3339, respond
from workers.protocol import ChatMessage, PromptSpec


async def chat(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter_ns()
    req = await read_request(request, ChatRequest.parse)
    p = await prepare(request, req.model, req.options)
    if not req.messages:
        return await load_or_unload(p, req.model, req.keep_alive,
                                    {"message": {"role": "assistant", "content": ""}})
    run = await submit_chat(p, req)

    def chunk(text: str) -> dict[str, Any] | None:
        parts = run.answer.feed(text)
        if not parts:
            return None
        return {"model": req.model, "created_at": now_rfc3339(), "message": message(parts),
                "done": False}

    def final(text: str, done) -> dict[str, Any]:  # type: ignore[no-untyped-def]
        return {"model": req.model, "created_at": now_rfc3339(),
                "message": message(run.answer.feed(text) + run.answer.finish()), "done": True,
                **final_stats(done, run.job.load_duration, started)}

    return await respond(request, run.job, req.stream, chunk, final, started=run.answer.started)


async def submit_chat(p: Prepared, req: ChatRequest) -> Run:
    """The conversation (Modelfile messages and system first) handed to the scheduler."""
    messages: list[ChatMessage] = [{"role": m["role"], "content": m["content"]}
                                   for m in p.spec.messages] + req.messages
    if p.spec.system and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": p.spec.system})
    # Inferring thinking tags and the tool-call format parses the template: not on the loop.
    output = await threads.parse(answer, req.model, p.spec.template, req.think, req.tools)
    prompt: PromptSpec = {"raw": None, "messages": messages, "template": p.spec.template,
                          "context": [], "tools": req.tools, "think": req.think}
    with errors.scheduler_errors():
        job = await p.scheduler.submit(p.ref, p.num_ctx, req.keep_alive, prompt, p.sampling,
                                       want_context=False, output_format=req.format)
    return Run(job, output)

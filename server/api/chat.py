"""POST /api/chat: the next assistant message of a conversation."""

from __future__ import annotations

import time

from aiohttp import web

from server import errors, threads
from server.answer import Parts, answer_for
from server.api.generate import load_or_unload
from server.generation import Body, Run, bodies, final_stats, with_logprobs
from server.resolve import Prepared, prepare
from server.schemas import CHAT_FIELDS, ChatRequest, only, read_request
from server.streaming import respond
from server.thinking import ThinkingParser
from server.timestamps import now_rfc3339
from server.toolchoice import ForcedCall, call_format
from workers import protocol
from workers.protocol import ChatMessage, PromptSpec


async def chat(request: web.Request) -> web.StreamResponse:
    started = time.perf_counter_ns()
    req = await read_request(request, only(CHAT_FIELDS, ChatRequest.parse))
    p = await prepare(request, req.model, req.options)
    if not req.messages:
        return await load_or_unload(p, req.model, req.keep_alive,
                                    {"message": {"role": "assistant", "content": ""}}, "chat")
    run = await submit_chat(p, req)

    def chunk(parts: Parts) -> Body:
        return with_logprobs({"model": req.model, "created_at": now_rfc3339(),
                              "message": message(parts), "done": False}, parts)

    def final(parts: Parts, done: protocol.Done) -> Body:
        return with_logprobs({"model": req.model, "created_at": now_rfc3339(),
                              "message": message(parts), "done": True,
                              **final_stats(done, run.job.load_duration, started)}, parts)

    return await respond(request, bodies(request, run, req.stream, chunk, final), req.stream)


async def submit_chat(p: Prepared, req: ChatRequest, call: ForcedCall | None = None) -> Run:
    """The conversation (Modelfile messages and system first) handed to the scheduler; with
    `call`, the answer is held to a call of those tools (server/toolchoice.py)."""
    p.require_completion(req.model, "chat")
    p.require_vision(req.model, req.messages)
    messages: list[ChatMessage] = [{"role": m["role"], "content": m["content"]}
                                   for m in p.spec.messages] + req.messages
    # As Ollama: the Modelfile's system goes first unless the request brings its own.
    if p.spec.system and (not req.messages or req.messages[0]["role"] != "system"):
        messages.insert(0, {"role": "system", "content": p.spec.system})
    if p.spec.config.get("model_family") == "qwen3" or p.spec.name.model == "deepseek-r1":
        messages = without_earlier_thinking(messages)
    think = p.think(req.think)
    # Inferring thinking tags and the tool-call format parses the template: not on the loop.
    output = await threads.parse(answer_for, req.model, p.spec.name.full, p.spec.template, think,
                                 req.tools)
    prompt: PromptSpec = {"raw": None, "messages": messages, "template": p.spec.template,
                          "context": [], "tools": req.tools, "think": think,
                          "truncate": req.truncate}
    output_format, prefix = req.format, ""
    if call is not None:
        if req.format is not None:
            raise errors.BadRequest("a response format and a forced tool call cannot be combined")
        output_format, prefix = call_format(call, req.tools, p.spec.template)
    with errors.scheduler_errors():
        job = await p.scheduler.submit(p.ref, p.load, req.keep_alive, prompt, p.options,
                                       want_context=False, output_format=output_format,
                                       logprobs=req.logprobs, shift=req.shift,
                                       format_prefix=prefix)
    return Run(job, output)


def without_earlier_thinking(messages: list[ChatMessage]) -> list[ChatMessage]:
    """The conversation with the <think> blocks of the assistant's turns before the last user
    message cut from their content, as Ollama's filterThinkTags does for the qwen3 family and
    deepseek-r1 (whose templates would otherwise show the model its old thoughts)."""
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=-1)
    return [{**m, "content": ThinkingParser("<think>", "</think>").feed(m["content"])[1]}
            if m["role"] == "assistant" and i < last_user else m
            for i, m in enumerate(messages)]


def message(parts: Parts) -> Body:
    """An assistant message as /api/chat writes it: thinking and tool calls only when present."""
    body: Body = {"role": "assistant", "content": parts.content}
    if parts.thinking:
        body["thinking"] = parts.thinking
    if parts.tool_calls:
        body["tool_calls"] = parts.tool_calls
    return body

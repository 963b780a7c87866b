"""POST /v1/messages: Anthropic's Messages API through the native chat. Its errors take
Anthropic's shape in the one error map (server/errors.py)."""

from __future__ import annotations

from dataclasses import replace

from aiohttp import web

from server.answer import Answer, Parts
from server.anthropic import reply
from server.anthropic.request import MessagesRequest, parse
from server.api.chat import submit_chat
from server.generation import Bodies, bodies
from server.resolve import prepare
from server.schemas import read_request
from server.streaming import respond
from workers import protocol


async def messages(request: web.Request) -> web.StreamResponse:
    msg: MessagesRequest = await read_request(request, parse)
    req = msg.chat
    p = await prepare(request, req.model, req.options)
    if req.think and "thinking" not in p.capabilities:
        # As Ollama's /v1/messages: Claude Code asks every model to think; one that cannot
        # answers without thinking instead of refusing.
        req.think = None
    run = await submit_chat(p, req, msg.call)
    prompt = _PromptSize(run.answer)
    run.answer = prompt  # type: ignore[assignment]  # the same interface
    message_id = reply.new_id("msg")
    stops = req.options.get("stop") or []  # the request's stop_sequences
    events = reply.EventStream(message_id, req.model, stops)
    calls = 0  # tool calls shown so far

    def shown(parts: Parts) -> Parts:
        """The parts the client sees: no thinking for display "omitted", no call after the
        first for disable_parallel_tool_use."""
        nonlocal calls
        tool_calls = parts.tool_calls[:max(0, 1 - calls)] if msg.one_call else parts.tool_calls
        calls += len(tool_calls)
        return replace(parts, thinking=parts.thinking if msg.show_thinking else "",
                       tool_calls=tool_calls)

    def chunk(parts: Parts) -> Bodies:
        return events.feed(shown(parts), prompt.tokens)

    def final(parts: Parts, done: protocol.Done) -> Bodies:
        if req.stream:
            return events.finish(shown(parts), done)
        parts = shown(parts)
        reason = reply.stop_reason(done, bool(parts.tool_calls), stops)
        return reply.message(message_id, req.model, reply.blocks(parts), reason,
                             done.prompt_eval_count, done.eval_count,
                             reply.stop_sequence(done, reason))

    return await respond(request, bodies(request, run, req.stream, chunk, final), req.stream,
                         reply.FRAMING)


class _PromptSize:
    """The run's answer splitter, noting the prompt's size when the job starts: Anthropic's
    `message_start` reports it, and is sent before any text."""

    def __init__(self, answer: Answer) -> None:
        self._answer = answer
        self.tokens = 0

    def started(self, msg: protocol.Started) -> None:
        self.tokens = msg.prompt_tokens
        self._answer.started(msg)

    def feed(self, text: str) -> Parts:
        return self._answer.feed(text)

    def finish(self) -> Parts:
        return self._answer.finish()

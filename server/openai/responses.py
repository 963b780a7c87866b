"""POST /v1/responses: OpenAI's Responses API, stateless as Ollama serves it, run as a native
chat (server/api/chat.py). The body becomes a chat request in responses_request.py; what the
model says becomes output items and stream events in responses_output.py."""

from __future__ import annotations

from aiohttp import web

from server.answer import Parts
from server.api.chat import submit_chat
from server.generation import Bodies, bodies
from server.openai import convert
from server.openai.responses_output import Output, new_id, sse_event
from server.openai.responses_request import parse_request
from server.resolve import prepare
from server.schemas import read_request
from server.streaming import Framing, respond
from workers import protocol


async def responses(request: web.Request) -> web.StreamResponse:
    parsed = await read_request(request, parse_request)
    req = parsed.chat
    p = await prepare(request, req.model, req.options)
    run = await submit_chat(p, req, parsed.call)
    output = Output({"id": new_id("resp"), "object": "response", "created_at": convert.now(),
                     "model": req.model, **parsed.echo,
                     # the values the model runs with: the request's, else its Modelfile's
                     "temperature": p.options["temperature"], "top_p": p.options["top_p"]})

    def final(parts: Parts, done: protocol.Done) -> Bodies:
        events = output.feed(parts) + output.finish(done)
        return events if req.stream else events[-1]["response"]

    # Named events and no [DONE]: the stream ends with response.completed (or incomplete).
    framing = Framing("text/event-stream", sse_event, output.failed)
    return await respond(request, bodies(request, run, req.stream, output.feed, final),
                         req.stream, framing)

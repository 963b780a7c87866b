"""The token path below the handlers: a job's events turned into bodies (server/generation.py),
and bodies framed on the wire (server/streaming.py), on the real app machinery with fake jobs."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any, AsyncIterator, Awaitable, Callable

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, make_mocked_request

from scheduler.job import Job
from server import errors
from server.accesslog import TOKENS
from server.answer import Answer, Parts
from server.generation import Run, bodies
from server.metrics import ARRIVED, METRICS, Metrics
from server.streaming import NDJSON_FRAMING, SSE_FRAMING, respond
from workers import protocol

Client = Callable[..., Awaitable[TestClient]]
DONE = protocol.Done(1, "stop", prompt_eval_count=3, prompt_eval_duration=1, eval_count=2,
                     eval_duration=1)


class FakeWorker:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    def send(self, msg: Any) -> None:
        self.sent.append(msg)


def job(*messages: Any) -> tuple[Job[protocol.Done], FakeWorker, list[Job[Any]]]:
    """A job whose worker has sent `messages`; and that worker, and the jobs whose slot came
    back (once each)."""
    worker, ended = FakeWorker(), []
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for msg in messages:
        queue.put_nowait(msg)
    runner: Any = SimpleNamespace(worker=worker)
    return Job(1, runner, "m", 0, protocol.Done, queue, ended.append), worker, ended


def request() -> web.Request:
    app = web.Application()
    app[METRICS] = Metrics()
    req = make_mocked_request("POST", "/api/generate", app=app)
    req[ARRIVED] = 0.0
    return req


def run(*messages: Any) -> tuple[Run, FakeWorker, list[Job[Any]]]:
    j, worker, ended = job(*messages)
    return Run(j, Answer("", think=False, tools=[])), worker, ended


def chunk(parts: Parts) -> dict[str, Any]:
    return {"text": parts.content}


def final(parts: Parts, done: protocol.Done) -> dict[str, Any]:
    return {"text": parts.content, "done": done.done_reason}


async def collected(events: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    return [event async for event in events]


# ---- events into bodies ---------------------------------------------------------------------

async def test_streaming_gives_a_body_per_chunk_then_the_final_one() -> None:
    r, worker, ended = run(protocol.Started(1, 3, False), protocol.Chunk(1, "Hi", 1),
                           protocol.Chunk(1, " there", 1), DONE)
    got = await collected(bodies(request(), r, True, chunk, final))
    assert got == [{"text": "Hi"}, {"text": " there"}, {"text": "", "done": "stop"}]
    assert ended == [r.job] and worker.sent == []


async def test_not_streaming_gives_one_final_body_with_all_the_text() -> None:
    r, _, _ = run(protocol.Chunk(1, "Hi", 1), protocol.Chunk(1, " there", 1), DONE)
    assert await collected(bodies(request(), r, False, chunk, final)) == [
        {"text": "Hi there", "done": "stop"}]


async def test_a_final_of_several_events_gives_each_as_a_body() -> None:
    r, _, _ = run(DONE)
    got = await collected(bodies(request(), r, True, chunk, lambda parts, done: [{"a": 1},
                                                                                 {"b": 2}]))
    assert got == [{"a": 1}, {"b": 2}]


async def test_the_final_counts_go_to_the_access_log() -> None:
    req = request()
    r, _, _ = run(DONE)
    await collected(bodies(req, r, False, chunk, final))
    assert req[TOKENS] == (3, 2)


@pytest.mark.parametrize("kind,error", [("bad_request", errors.BadRequest),
                                        ("internal", errors.WorkerError)])
async def test_a_failed_job_raises_the_api_error_of_whose_fault_it_was(
        kind: str, error: type[errors.APIError]) -> None:
    r, _, ended = run(protocol.Failed(1, "no", kind))
    with pytest.raises(error, match="no"):
        await collected(bodies(request(), r, True, chunk, final))
    assert ended == [r.job]


async def test_closing_the_bodies_early_cancels_the_job_and_frees_its_slot() -> None:
    r, worker, ended = run(protocol.Chunk(1, "Hi", 1))
    events = bodies(request(), r, True, chunk, final)
    assert await anext(events) == {"text": "Hi"}
    await events.aclose()  # the client went away
    assert [type(m).__name__ for m in worker.sent] == ["Cancel"] and ended == [r.job]


# ---- bodies on the wire ---------------------------------------------------------------------

async def events(*items: dict[str, Any] | Exception) -> AsyncIterator[dict[str, Any]]:
    for item in items:
        if isinstance(item, Exception):
            raise item
        yield item


async def served(aiohttp_client: Client, stream: bool, *items: dict[str, Any] | Exception,
                 sse: bool = False) -> tuple[int, bytes]:
    async def handler(req: web.Request) -> web.StreamResponse:
        return await respond(req, events(*items), stream, SSE_FRAMING if sse else NDJSON_FRAMING)

    app = web.Application(middlewares=[errors.error_middleware])
    app.router.add_post("/", handler)
    resp = await (await aiohttp_client(app)).post("/")
    return resp.status, await resp.read()


async def test_a_stream_is_one_ndjson_line_per_event(aiohttp_client: Client) -> None:
    assert await served(aiohttp_client, True, {"a": 1}, {"b": 2}) == (200,
                                                                       b'{"a":1}\n{"b":2}\n')


async def test_not_streaming_the_last_event_is_the_reply(aiohttp_client: Client) -> None:
    status, body = await served(aiohttp_client, False, {"a": 1}, {"b": 2})
    assert (status, orjson.loads(body)) == (200, {"b": 2})


async def test_a_failure_before_the_first_event_is_an_http_error(aiohttp_client: Client) -> None:
    status, body = await served(aiohttp_client, True, errors.BadRequest("bad"))
    assert (status, orjson.loads(body)) == (400, {"error": "bad"})


async def test_a_failure_after_the_first_event_is_an_error_line(aiohttp_client: Client) -> None:
    assert await served(aiohttp_client, True, {"a": 1}, errors.WorkerError("gone")) == (
        200, b'{"a":1}\n{"error":"gone"}\n')


async def test_server_sent_events_end_with_done_even_after_an_error(
        aiohttp_client: Client) -> None:
    status, body = await served(aiohttp_client, True, {"a": 1}, errors.WorkerError("gone"),
                                sse=True)
    assert status == 200 and body == (
        b'data: {"a":1}\n\n'
        b'data: {"error":{"message":"gone","type":"api_error","param":null,"code":null}}\n\n'
        b"data: [DONE]\n\n")

"""The access log: one JSON line per request, with the model and token counts when known."""

from __future__ import annotations

import asyncio
import logging

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from server.accesslog import CLIENT_GONE, MODEL, TOKENS, access_log


def _app() -> web.Application:
    async def generate(request: web.Request) -> web.Response:
        request[MODEL] = "gemma3:270m"
        request[TOKENS] = (12, 8)
        return web.json_response({})

    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(60)
        return web.Response()

    app = web.Application(middlewares=[access_log])
    app.router.add_post("/api/generate", generate)
    app.router.add_get("/hang", hang)
    return app


def _lines(caplog: pytest.LogCaptureFixture) -> list[dict]:
    return [orjson.loads(r.getMessage()) for r in caplog.records if r.name == "corral.access"]


async def test_a_request_is_logged_with_model_tokens_and_status(
        aiohttp_client, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, "corral.access")
    client: TestClient = await aiohttp_client(_app())
    assert (await client.post("/api/generate")).status == 200
    (line,) = _lines(caplog)
    assert line["method"] == "POST" and line["path"] == "/api/generate" and line["status"] == 200
    assert line["model"] == "gemma3:270m"
    assert (line["prompt_tokens"], line["eval_tokens"]) == (12, 8)
    assert line["duration_ms"] >= 0


async def test_an_unknown_route_is_logged_with_its_status(
        aiohttp_client, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, "corral.access")
    client: TestClient = await aiohttp_client(_app())
    assert (await client.get("/nope")).status == 404
    assert _lines(caplog)[0]["status"] == 404


async def test_a_client_that_went_away_is_logged_as_499(
        aiohttp_client, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, "corral.access")
    client: TestClient = await aiohttp_client(_app(), server_kwargs={"handler_cancellation": True})
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(client.get("/hang"), 0.2)
    for _ in range(50):
        if _lines(caplog):
            break
        await asyncio.sleep(0.05)
    assert _lines(caplog)[0]["status"] == CLIENT_GONE

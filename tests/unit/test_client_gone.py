"""A client that hangs up mid-body or mid-stream ends its request as 499, quietly: no
traceback in the log for each one (a client can hang up as often as it likes)."""

from __future__ import annotations

import logging

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from server import errors
from server.accesslog import CLIENT_GONE


async def test_a_client_gone_mid_request_is_499_and_logs_no_error(
        aiohttp_client: type[TestClient], caplog: pytest.LogCaptureFixture) -> None:
    async def hung_up(request: web.Request) -> web.Response:
        raise ConnectionResetError("Connection lost")  # what reading or writing it raises

    app = web.Application(middlewares=[errors.error_middleware])
    app.router.add_post("/", hung_up)
    with caplog.at_level(logging.ERROR):
        resp = await (await aiohttp_client(app)).post("/", data=b"{")  # type: ignore[operator]
    assert resp.status == CLIENT_GONE
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]

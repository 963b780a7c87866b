"""GET /api/ready: a front end whose threads are all held is not ready, even with every worker
answering (renders once held them all while the probe said ready)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest
from aiohttp.test_utils import TestClient

from server import threads
from tests.unit.test_openapi import make_app

Client = Callable[..., Awaitable[TestClient]]


async def test_ready_when_workers_and_front_end_threads_answer(aiohttp_client: Client,
                                                               tmp_path: Path) -> None:
    client = await aiohttp_client(make_app(tmp_path))
    reply = await client.get("/api/ready")
    assert reply.status == 200
    assert await reply.json() == {"status": "ready", "front_end": "ready",
                                  "workers": {"cpu": "ready"}}


async def test_parsing_threads_all_held_make_the_front_end_not_ready(
        aiohttp_client: Client, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(threads, "PROBE_TIMEOUT", 0.2)
    client = await aiohttp_client(make_app(tmp_path))
    release = threading.Event()
    held: list[Any] = [threads.PARSING.submit(release.wait, 10)
                       for _ in range(threads.PARSING_THREADS)]
    try:
        reply = await client.get("/api/ready")
        body = await reply.json()
    finally:
        release.set()
        for future in held:
            future.result()
    assert reply.status == 503
    assert body["front_end"] == "parsing threads all busy"
    assert "front end" in body["error"] and body["workers"] == {"cpu": "ready"}
    assert (await client.get("/api/ready")).status == 200

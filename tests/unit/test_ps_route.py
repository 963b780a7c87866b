"""GET /api/ps in process, against a scheduler's snapshot."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Awaitable, Callable

from aiohttp.test_utils import TestClient

from scheduler.snapshot import RunnerState, Snapshot
from server.app import build_app
from server.settings import load as load_settings
from store.store import Store
from tests.unit.test_openapi import DummyScheduler


def runner(name: str, expires_at: float) -> RunnerState:
    return RunnerState(name=name, digest="d" * 64, details={}, size=1, size_vram=0,
                       context_length=4096, expires_at=expires_at, devices=("cpu",), slots=1,
                       refcount=0, kv_used=0, kv_cells=4096)


class Loaded(DummyScheduler):
    def snapshot(self) -> Snapshot:
        return Snapshot(runners=(runner("soon", 1_000), runner("late", 3_000),
                                 runner("middle", 2_000)), waiting=0, worker_restarts=0)


async def test_the_model_with_the_longest_time_left_comes_first(
        aiohttp_client: Callable[..., Awaitable[TestClient]], tmp_path: Path) -> None:
    scheduler: Any = Loaded()
    client = await aiohttp_client(build_app(load_settings({}), Store(tmp_path / "models"),
                                            scheduler))
    models = (await (await client.get("/api/ps")).json())["models"]
    assert [m["name"] for m in models] == ["late", "middle", "soon"]  # as Ollama's PsHandler

"""GET /metrics: requests counted by route and status, a generation's timings and token counts,
and gauges read off the scheduler when scraped; on the real app with a fake scheduler."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, make_mocked_request

from scheduler.devices import Device
from scheduler.snapshot import RunnerState, Snapshot
from server import metrics
from server.app import build_app
from server.metrics import ARRIVED, METRICS, UNMATCHED, Generation, Metrics
from server.settings import load as load_settings
from store.store import Store
from tests.prometheus import sample_value
from workers import protocol

Client = Callable[..., Awaitable[TestClient]]
GIB = 1 << 30


def runner(name: str, refcount: int = 0, kv_cells: int = 100, kv_used: int = 0) -> RunnerState:
    """A loaded runner as the scheduler's snapshot shows it: its name, jobs and KV cells."""
    return RunnerState(name=name, digest="sha256:1", details={}, size=GIB, size_vram=0,
                       context_length=4096, expires_at=0.0, devices=("cpu",), slots=4,
                       refcount=refcount, kv_used=kv_used, kv_cells=kv_cells)


class FakeScheduler:
    def __init__(self, runners: list[RunnerState] | None = None, waiting: int = 0,
                 worker_restarts: int = 0, devices: list[Device] | None = None) -> None:
        self._snapshot = Snapshot(tuple(runners or ()), waiting, worker_restarts)
        self._devices = devices or []

    async def stop_admitting(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def devices(self) -> list[Device]:
        return self._devices


def make_app(tmp_path: Path, scheduler: FakeScheduler | None = None,
             **env: str) -> web.Application:
    fake: Any = scheduler or FakeScheduler()
    return build_app(load_settings(env), Store(tmp_path / "models"), fake)


async def scrape(client: TestClient) -> str:
    resp = await client.get("/metrics")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return await resp.text()


# --- gauges read off the scheduler ------------------------------------------------------------

async def test_running_queued_loaded_and_restarts_mirror_the_scheduler(
        aiohttp_client: Client, tmp_path: Path) -> None:
    scheduler = FakeScheduler([runner("a", refcount=2), runner("b", refcount=1)], waiting=3,
                              worker_restarts=4)
    text = await scrape(await aiohttp_client(make_app(tmp_path, scheduler)))
    assert sample_value(text, "corral_requests_running") == 3
    assert sample_value(text, "corral_requests_queued") == 3
    assert sample_value(text, "corral_models_loaded") == 2
    assert sample_value(text, "corral_worker_restarts_total") == 4


async def test_a_models_replicas_count_once_as_loaded(aiohttp_client: Client,
                                                      tmp_path: Path) -> None:
    scheduler = FakeScheduler([runner("a"), runner("a"), runner("b")])
    text = await scrape(await aiohttp_client(make_app(tmp_path, scheduler)))
    assert sample_value(text, "corral_models_loaded") == 2


async def test_kv_cache_usage_is_the_share_of_a_models_cells_in_use_over_its_runners(
        aiohttp_client: Client, tmp_path: Path) -> None:
    scheduler = FakeScheduler([runner("a", kv_used=30), runner("a", kv_used=10),
                               runner("b", kv_used=16, kv_cells=64)])
    text = await scrape(await aiohttp_client(make_app(tmp_path, scheduler)))
    assert sample_value(text, "corral_kv_cache_usage_ratio", model="a") == 0.2
    assert sample_value(text, "corral_kv_cache_usage_ratio", model="b") == 0.25


async def test_kv_cache_usage_of_a_model_that_has_run_no_step_is_zero(
        aiohttp_client: Client, tmp_path: Path) -> None:
    scheduler = FakeScheduler([runner("a", kv_cells=4096)])
    text = await scrape(await aiohttp_client(make_app(tmp_path, scheduler)))
    assert sample_value(text, "corral_kv_cache_usage_ratio", model="a") == 0


async def test_device_memory_is_reported_used_and_total_per_device(
        aiohttp_client: Client, tmp_path: Path) -> None:
    scheduler = FakeScheduler(devices=[Device("cuda:0", "A", 24 * GIB, 20 * GIB),
                                       Device("cuda:1", "B", 80 * GIB, 80 * GIB)])
    text = await scrape(await aiohttp_client(make_app(tmp_path, scheduler)))
    assert sample_value(text, "corral_device_memory_used_bytes", device="cuda:0") == 4 * GIB
    assert sample_value(text, "corral_device_memory_total_bytes", device="cuda:0") == 24 * GIB
    assert sample_value(text, "corral_device_memory_used_bytes", device="cuda:1") == 0
    assert sample_value(text, "corral_device_memory_total_bytes", device="cuda:1") == 80 * GIB


# --- requests ---------------------------------------------------------------------------------

async def test_requests_are_counted_and_timed_by_route_template_and_status(
        aiohttp_client: Client, tmp_path: Path) -> None:
    client = await aiohttp_client(make_app(tmp_path))
    for name in ("one", "two"):
        assert (await client.get(f"/v1/models/{name}")).status == 404
    text = await scrape(client)
    route = "/v1/models/{model}"
    assert sample_value(text, "corral_requests_total", endpoint=route, status="404") == 2
    assert sample_value(text, "corral_request_duration_seconds_count", endpoint=route) == 2


async def test_paths_no_route_matches_count_under_one_fixed_endpoint(
        aiohttp_client: Client, tmp_path: Path) -> None:
    client = await aiohttp_client(make_app(tmp_path))
    for path in ("/nope", "/api/nope/1"):
        assert (await client.get(path)).status == 404
    text = await scrape(client)
    assert sample_value(text, "corral_requests_total", endpoint=UNMATCHED, status="404") == 2
    assert "/nope" not in text


async def test_a_client_that_went_away_counts_as_499(aiohttp_client: Client,
                                                     tmp_path: Path) -> None:
    app = make_app(tmp_path)

    async def hang(request: web.Request) -> web.Response:
        await asyncio.sleep(60)
        return web.Response()

    app.router.add_get("/hang", hang)
    client = await aiohttp_client(app, server_kwargs={"handler_cancellation": True})
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(client.get("/hang"), 0.2)
    for _ in range(50):  # the server notices the closed connection on its own time
        text = await scrape(client)
        if sample_value(text, "corral_requests_total", endpoint="/hang", status="499"):
            break
        await asyncio.sleep(0.05)
    assert sample_value(text, "corral_requests_total", endpoint="/hang", status="499") == 1


async def test_metrics_need_the_api_key_when_one_is_set(aiohttp_client: Client,
                                                        tmp_path: Path) -> None:
    client = await aiohttp_client(make_app(tmp_path, CORRAL_API_KEY="secret"))
    assert (await client.get("/metrics")).status == 401
    resp = await client.get("/metrics", headers={"Authorization": "Bearer secret"})
    assert resp.status == 200


# --- a generation's messages --------------------------------------------------------------------

class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock(100.0)
    monkeypatch.setattr(metrics.time, "perf_counter", clock)
    return clock


def generation(clock: Clock) -> tuple[Generation, Metrics]:
    """A generation of model "m" whose request arrived at the clock's time."""
    app = web.Application()
    app[METRICS] = Metrics()
    request = make_mocked_request("POST", "/api/generate", app=app)
    request[ARRIVED] = clock.now
    return Generation(request, "m"), app[METRICS]


def sample(registry: Metrics, name: str) -> float | None:
    return registry.registry.get_sample_value(name, {"model": "m"})


def test_the_first_token_is_timed_from_the_requests_arrival(clock: Clock) -> None:
    gen, registry = generation(clock)
    clock.now += 0.5
    gen.saw(protocol.Chunk(1, "Hi", 1))
    clock.now += 0.1
    gen.saw(protocol.Chunk(1, " there", 1))
    assert sample(registry, "corral_time_to_first_token_seconds_count") == 1
    assert sample(registry, "corral_time_to_first_token_seconds_sum") == pytest.approx(0.5)


def test_each_token_of_a_chunk_gets_its_share_of_the_gap_since_the_last(clock: Clock) -> None:
    gen, registry = generation(clock)
    gen.saw(protocol.Chunk(1, "Hi", 1))
    clock.now += 0.1
    gen.saw(protocol.Chunk(1, " there", 1))
    clock.now += 0.6
    gen.saw(protocol.Chunk(1, " café", 3))  # text held back until the character was whole
    gen.saw(protocol.Chunk(1, "!", 0))  # a held-back tail flushed at the end: no new token
    assert sample(registry, "corral_inter_token_latency_seconds_count") == 4
    assert registry.registry.get_sample_value(
        "corral_inter_token_latency_seconds_bucket", {"model": "m", "le": "0.5"}) == 4
    assert sample(registry, "corral_inter_token_latency_seconds_sum") == pytest.approx(0.7)


def test_a_finished_generation_counts_its_prompt_and_generated_tokens(clock: Clock) -> None:
    gen, registry = generation(clock)
    gen.saw(protocol.Chunk(1, "Hi", 1))
    gen.saw(protocol.Done(1, "stop", prompt_eval_count=12, prompt_eval_duration=1,
                          eval_count=8, eval_duration=1))
    assert sample(registry, "corral_prompt_tokens_total") == 12
    assert sample(registry, "corral_generated_tokens_total") == 8


def test_prompt_tokens_served_from_the_prompt_cache_are_counted_apart(clock: Clock) -> None:
    gen, registry = generation(clock)
    gen.saw(protocol.Done(1, "stop", prompt_eval_count=1000, prompt_eval_duration=1,
                          eval_count=8, eval_duration=1, prompt_cached=990))
    assert sample(registry, "corral_prompt_cached_tokens_total") == 990
    assert sample(registry, "corral_prompt_tokens_total") == 1000

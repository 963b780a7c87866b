"""Scheduling on the real server: the model limit, replicas over two (simulated) CPU devices, a
hang caught by the step-time deadline, and a bounded queue under a burst."""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import orjson
import psutil
import pytest

from tests.e2e.conftest import MODEL, QUICK
from tests.e2e.server import Server, create_tuned
from tests.e2e.test_serving import LONG, open_stream, wait_until, worker_pids

TUNED = "sched-tuned"


@pytest.fixture(scope="module")
def tuned(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Gemma with a LoRA adapter: other weights as far as the scheduler goes, so another runner."""
    yield create_tuned(server, TUNED, MODEL, tmp_path_factory.mktemp("lora"))
    server.request("DELETE", "/api/delete", {"model": TUNED})


@pytest.fixture
def simulated_server(store_dir: Path) -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def make(devices: str, **env: str) -> Server:
        srv = Server(store_dir, env=env, devices=devices).start()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop(timeout=60)


def generate(srv: Server, model: str = MODEL, options: dict = QUICK) -> dict:
    reply = srv.post("/api/generate", {"model": model, "prompt": "hi", "raw": True,
                                       "stream": False, "options": options})
    assert reply.status == 200, reply.body
    return reply.json()


def loaded(srv: Server) -> list[str]:
    return sorted(m["name"] for m in srv.get("/api/ps").json()["models"])


def test_max_loaded_models_one_evicts_the_idle_model(make_server: Callable[..., Server],
                                                     tuned: str) -> None:
    srv = make_server(OLLAMA_MAX_LOADED_MODELS="1")
    generate(srv)
    assert loaded(srv) == [MODEL]
    generate(srv, tuned)
    assert loaded(srv) == [tuned]


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def burst(srv: Server, pids: list[int]) -> tuple[int, dict[int, float]]:
    """8 generations of 32 tokens at once, each answered in full: the most runners of the model
    /api/ps showed meanwhile, and the CPU seconds each worker in `pids` spent."""
    before = {pid: cpu_seconds(pid) for pid in pids}
    most_loaded = 0
    with ThreadPoolExecutor(8) as pool:
        replies = [pool.submit(generate, srv, MODEL, {"num_predict": 32, "temperature": 0})
                   for _ in range(8)]
        while not all(r.done() for r in replies):
            most_loaded = max(most_loaded, loaded(srv).count(MODEL))
            time.sleep(0.1)
    assert all(r.result()["eval_count"] == 32 for r in replies)
    return most_loaded, {pid: cpu_seconds(pid) - before[pid] for pid in pids}


def test_replicas_on_two_devices_share_a_burst_and_the_surplus_one_unloads(
        simulated_server: Callable[..., Server]) -> None:
    srv = simulated_server("cpu:4G,cpu:4G", OLLAMA_NUM_PARALLEL="1")
    generate(srv)  # the first runner, on one device
    most_loaded, work = burst(srv, worker_pids(srv))
    assert most_loaded == 2  # the model, twice
    assert len(work) == 2 and min(work.values()) > 1.0, work  # both decoded, not just loaded
    assert wait_until(lambda: len(loaded(srv)) == 1, 30)  # the idle replica goes after 10 s


def test_a_stopped_worker_is_caught_by_its_step_deadline_long_before_the_timeout(
        make_server: Callable[..., Server]) -> None:
    srv = make_server()  # CORRAL_WORKER_TIMEOUT stays at its 5 minutes
    generate(srv)  # loads the model and gives it a history of (fast) steps
    [pid] = worker_pids(srv)
    conn, resp = open_stream(srv, LONG)
    os.kill(pid, signal.SIGSTOP)
    stopped = time.monotonic()
    lines = [orjson.loads(line) for line in resp.read().splitlines() if line.strip()]
    waited = time.monotonic() - stopped
    conn.close()
    assert "unexpectedly stopped" in lines[-1]["error"]
    assert waited < 100, waited  # the timeout is 300 s; a fast-stepping worker's is far less
    assert wait_until(lambda: worker_pids(srv) not in ([], [pid]), 60)
    assert generate(srv)["done"] is True


def test_a_burst_past_the_queue_gets_503s_and_every_admitted_request_completes(
        make_server: Callable[..., Server]) -> None:
    srv = make_server(OLLAMA_NUM_PARALLEL="1", OLLAMA_MAX_QUEUE="2")
    generate(srv)
    go = threading.Barrier(8)

    def one() -> tuple[int, dict]:
        go.wait()
        reply = srv.post("/api/generate", {"model": MODEL, "prompt": "hi", "stream": False,
                                           "options": QUICK})
        return reply.status, reply.json()

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: one(), range(8)))
    statuses = sorted(status for status, _ in results)
    assert 503 in statuses and statuses.count(200) >= 3  # one running, two queued at least
    assert set(statuses) == {200, 503}
    assert all(body["done"] and body["eval_count"] == 8 for status, body in results
               if status == 200)

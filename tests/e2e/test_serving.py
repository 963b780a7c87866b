"""Serving behaviour: concurrency, cancellation, crash recovery, shutdown, limits."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import orjson
import psutil
import pytest

from tests.e2e.conftest import MODEL, QUICK
from tests.e2e.server import ROOT, Server

LONG = {"num_predict": 2000, "temperature": 0}


def open_stream(server: Server, options: dict, prompt: str = "Count to one thousand.",
                model: str = MODEL) -> tuple:
    """Starts a streaming generate and reads its first line; returns (connection, response)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    conn.request("POST", "/api/generate", orjson.dumps(
        {"model": model, "prompt": prompt, "options": options}))
    resp = conn.getresponse()
    assert resp.status == 200
    assert orjson.loads(resp.readline())["done"] is False
    return conn, resp


def worker_pids(server: Server) -> list[int]:
    assert server.process is not None
    return [p.pid for p in psutil.Process(server.process.pid).children()
            if "spawn_main" in " ".join(p.cmdline())]


def wait_until(check: Callable[[], bool], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return False


def test_concurrent_requests_each_get_their_own_output(server: Server) -> None:
    # Counting continuations are far from any near-tie, so batched and solo runs agree exactly
    # (llama.cpp does not promise bit-identical logits across batch shapes in general).
    starts = [1, 20, 300, 4000, 50, 600, 7000, 80]

    def run(start: int) -> dict:
        prompt = ", ".join(str(start + k) for k in range(4)) + ","
        return server.post("/api/generate", {"model": MODEL, "prompt": prompt, "raw": True,
                                             "stream": False,
                                             "options": {"num_predict": 8, "temperature": 0}}).json()

    with ThreadPoolExecutor(len(starts)) as pool:
        together = list(pool.map(run, starts))
    assert all(r["done"] and r["eval_count"] == 8 for r in together)
    for start, reply in zip(starts, together):
        assert reply["response"].startswith(f" {start + 4},"), reply["response"]
    assert [r["response"] for r in together] == [run(s)["response"] for s in starts]


def test_client_disconnect_frees_the_slot(make_server: Callable[..., Server]) -> None:
    server = make_server(OLLAMA_NUM_PARALLEL="1")
    conn, _ = open_stream(server, LONG)
    conn.close()  # the client goes away mid-stream
    reply = server.post("/api/generate", {"model": MODEL, "prompt": "hi", "stream": False,
                                          "options": QUICK}, timeout=60)
    assert reply.status == 200 and reply.json()["eval_count"] == 8


def test_a_model_loaded_for_a_client_that_left_unloads_at_its_keep_alive(
        make_server: Callable[..., Server]) -> None:
    server = make_server(OLLAMA_KEEP_ALIVE="3s")
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    conn.request("POST", "/api/generate", orjson.dumps({"model": MODEL, "prompt": "hi"}))
    while "loading gemma3" not in server.log():
        time.sleep(0.01)
    conn.close()  # the client goes away while its model loads

    def models_once(done: Callable[[list[dict]], bool], wait: float) -> list[dict]:
        """/api/ps's models once `done` holds of them, or after `wait` s (a busy machine loads
        slower than a fixed sleep allows)."""
        deadline = time.monotonic() + wait
        while not done(models := server.get("/api/ps").json()["models"]) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        return models

    [running] = models_once(bool, 60)
    assert running["expires_at"] > time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
    assert models_once(lambda models: not models, 10) == []  # 3 s after its load, unheld


def test_a_client_that_hangs_up_mid_body_is_logged_as_499_without_a_traceback(
        server: Server) -> None:
    seen = len(server.log())
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(f"POST /api/chat HTTP/1.1\r\nHost: {server.base}\r\n"
                     "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
                     '{"model": "'.encode())
        time.sleep(0.2)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # a reset
    time.sleep(0.5)
    since = server.log()[seen:]
    assert '"path":"/api/chat","status":499' in since
    assert "Traceback" not in since


def test_full_queue_answers_503(make_server: Callable[..., Server]) -> None:
    server = make_server(OLLAMA_NUM_PARALLEL="1", OLLAMA_MAX_QUEUE="1")
    conn, _ = open_stream(server, LONG)  # holds the only slot
    try:
        with ThreadPoolExecutor(2) as pool:
            waiting = [pool.submit(server.post, "/api/generate",
                                   {"model": MODEL, "prompt": "hi", "stream": False,
                                    "options": QUICK}) for _ in range(2)]
            # One of the two waits in the queue; the other finds it full.
            assert wait_until(lambda: any(f.done() for f in waiting))
            busy = next(f for f in waiting if f.done()).result()
            assert busy.status == 503
            assert busy.json() == {"error": "server busy, please try again.  "
                                            "maximum pending requests exceeded"}
            conn.close()  # frees the slot for the queued request
            assert sorted(f.result().status for f in waiting) == [200, 503]
    finally:
        conn.close()


def test_crashed_worker_fails_its_requests_and_is_restarted(make_server: Callable[..., Server]) -> None:
    server = make_server()
    conn, resp = open_stream(server, LONG)
    [pid] = worker_pids(server)
    os.kill(pid, signal.SIGKILL)
    lines = [orjson.loads(line) for line in resp.read().splitlines() if line.strip()]
    conn.close()
    assert "unexpectedly stopped" in lines[-1]["error"]
    assert wait_until(lambda: len(worker_pids(server)) == 1 and worker_pids(server) != [pid])
    reply = server.post("/api/generate", {"model": MODEL, "prompt": "hi", "stream": False,
                                          "options": QUICK})
    assert reply.status == 200 and reply.json()["eval_count"] == 8


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_finishes_running_requests_then_exits_cleanly(
        make_server: Callable[..., Server], sig: int) -> None:
    server = make_server()
    conn, resp = open_stream(server, {"num_predict": 40, "temperature": 0})
    workers = worker_pids(server)
    assert server.process is not None
    server.process.send_signal(sig)
    lines = [orjson.loads(line) for line in resp.read().splitlines() if line.strip()]
    conn.close()
    assert lines[-1]["done"] is True and lines[-1]["eval_count"] == 40
    assert server.process.wait(60) == 0
    assert not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != "zombie"
                   for pid in workers)


def test_killed_server_leaves_no_orphan_worker(make_server: Callable[..., Server]) -> None:
    server = make_server()
    [pid] = worker_pids(server)
    server.stop(signal.SIGKILL)
    assert wait_until(lambda: not psutil.pid_exists(pid)
                      or psutil.Process(pid).status() == "zombie", 15)


def test_bad_setting_fails_at_start_naming_the_variable() -> None:
    env = {**os.environ, "OLLAMA_NUM_PARALLEL": "zero"}
    result = subprocess.run([sys.executable, "-m", "server", "serve"], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().startswith("corral: OLLAMA_NUM_PARALLEL='zero' is invalid")
    assert len(result.stderr.strip().splitlines()) == 1


def test_idle_model_unloads_when_keep_alive_expires(make_server: Callable[..., Server]) -> None:
    server = make_server(OLLAMA_KEEP_ALIVE="1s")
    reply = server.post("/api/generate", {"model": MODEL, "prompt": "hi", "stream": False,
                                          "options": QUICK})
    assert reply.status == 200
    assert wait_until(lambda: server.get("/api/ps").json()["models"] == [], 20)


def test_request_keep_alive_overrides_the_server_default(make_server: Callable[..., Server]) -> None:
    server = make_server(OLLAMA_KEEP_ALIVE="1s")
    server.post("/api/generate", {"model": MODEL, "keep_alive": "1h"})
    time.sleep(2)
    [entry] = server.get("/api/ps").json()["models"]
    assert entry["name"] == MODEL

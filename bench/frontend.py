#!/usr/bin/env python3
"""The front end's own costs: GET /api/tags with 20 models in the store, the front end's idle
memory, and a cold model load against llama.cpp loading the same model directly.

    .venv/bin/python bench/frontend.py [--seconds 3] [--connections 16] [--rounds 5] [--json]

/api/tags: `--connections` keep-alive connections from one uvloop process, each sending its next
request as soon as the previous answer is complete, for `--seconds` per round; best of `--rounds`
(these machines are noisy). The client is a bare asyncio protocol writing one fixed request and
reading Content-Length bytes back, so that it costs far less than the server; its CPU time and
the server's are printed, since on 2 cores they compete.

RSS: the `corral serve` process alone (its worker is a child process of its own), once the
model is loaded and the server idle, and again after the /api/tags rounds.

Cold load: each round unloads the model (`keep_alive: 0`) and generates one token; the reply's
`load_duration` (the scheduler's wait for the worker's load) is set against
`llama_model_load_from_file` + `llama_init_from_model` timed in this process with the context
the worker creates (the same cells, slots, batch, threads and flash attention setting), and
against what the worker itself logs for the load ("loaded ... in 0.63s"), which tells the
worker's share of a gap from the front end's. Target (issue 11): at most raw + 0.3 s.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import orjson
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scheduler.placement import kv_plan  # noqa: E402
from tests.e2e.server import Server, bootstrap_store  # noqa: E402
from workers.options import BY_NAME  # noqa: E402

MODEL = "gemma3:270m"
MODELS_IN_STORE = 20
TAGS_REQUEST = b"GET /api/tags HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
MB = 1 << 20
WORKER_LOADED = re.compile(r"loaded \S+ on \S+ in ([0-9.]+)s")


class TagsClient(asyncio.Protocol):
    """One keep-alive connection asking for /api/tags again as soon as an answer is complete."""

    def __init__(self, deadline: float, latencies: list[float], done: asyncio.Future[None]) -> None:
        self._deadline = deadline
        self._latencies = latencies
        self._done = done
        self._buffer = bytearray()
        self._need = 0  # bytes of the whole response, once its headers are in
        self._sent = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self._send()

    def _send(self) -> None:
        self._buffer.clear()
        self._need = 0
        self._sent = time.perf_counter()
        self._transport.write(TAGS_REQUEST)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if not self._need:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self._buffer[:end]).lower()
            if not head.startswith(b"http/1.1 200"):
                self._fail(f"/api/tags answered {head.splitlines()[0]!r}")
                return
            length = head.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0]
            self._need = end + 4 + int(length)
        if len(self._buffer) < self._need:
            return
        now = time.perf_counter()
        self._latencies.append(now - self._sent)
        if now < self._deadline:
            self._send()
        else:
            self._transport.close()

    def _fail(self, message: str) -> None:
        if not self._done.done():
            self._done.set_exception(RuntimeError(message))
        self._transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self._done.done():
            self._done.set_result(None)


@dataclass
class TagsRound:
    latencies: list[float]
    wall: float
    client_cpu: float  # seconds of CPU this process used meanwhile
    server_cpu: float

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.wall


async def _tags_round(port: int, connections: int, seconds: float) -> tuple[list[float], float]:
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    start = time.perf_counter()
    done = [loop.create_future() for _ in range(connections)]
    for future in done:
        await loop.create_connection(
            lambda f=future: TagsClient(start + seconds, latencies, f), "127.0.0.1", port)
    await asyncio.gather(*done)
    return latencies, time.perf_counter() - start


def tags_round(server: Server, connections: int, seconds: float) -> TagsRound:
    import uvloop  # noqa: PLC0415 - the server's loop, so the client is as cheap as it can be

    process = psutil.Process(server.process.pid)  # type: ignore[union-attr]
    server_before, client_before = sum(process.cpu_times()[:2]), time.process_time()
    latencies, wall = uvloop.run(_tags_round(server.port, connections, seconds))
    return TagsRound(latencies, wall, time.process_time() - client_before,
                     sum(process.cpu_times()[:2]) - server_before)


class RawLoad:
    """llama.cpp loading the model and creating the worker's decode context, timed directly."""

    def __init__(self, model_path: Path, num_ctx: int, threads: int) -> None:
        import llama_cpp  # noqa: PLC0415 - only this part of the bench needs it

        self.llama = llama_cpp
        self._quiet = llama_cpp.llama_log_callback(lambda level, text, user: None)  # C holds it
        llama_cpp.llama_log_set(self._quiet, llama_cpp.ctypes.c_void_p(0))
        llama_cpp.llama_backend_init()
        self.path = str(model_path).encode()
        self.slots, self.cells = kv_plan(num_ctx, 0)
        self.threads = threads

    def seconds(self) -> float:
        llama = self.llama
        start = time.perf_counter()
        model = llama.llama_model_load_from_file(self.path, llama.llama_model_default_params())
        cparams = llama.llama_context_default_params()
        cparams.n_ctx, cparams.n_seq_max = self.cells, self.slots
        cparams.n_batch = cparams.n_ubatch = BY_NAME["num_batch"].default
        cparams.n_threads = cparams.n_threads_batch = self.threads
        cparams.kv_unified, cparams.flash_attn_type = True, -1
        ctx = llama.llama_init_from_model(model, cparams)
        elapsed = time.perf_counter() - start
        assert model and ctx, "llama.cpp could not load the model"
        llama.llama_free(ctx)
        llama.llama_model_free(model)
        return elapsed


def cold_load(server: Server) -> float:
    """Seconds of `load_duration` for one token of a model that was just unloaded."""
    server.post("/api/generate", {"model": MODEL, "keep_alive": 0})
    reply = server.post("/api/generate", {"model": MODEL, "prompt": "Hi", "stream": False,
                                          "options": {"num_predict": 1}})
    assert reply.status == 200, reply.body
    return reply.json()["load_duration"] / 1e9


def rss_mb(server: Server) -> float:
    return psutil.Process(server.process.pid).memory_info().rss / MB  # type: ignore[union-attr]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def fill_store(server: Server) -> None:
    """The bootstrapped model under MODELS_IN_STORE names in all."""
    for i in range(1, MODELS_IN_STORE):
        reply = server.post("/api/copy", {"source": MODEL, "destination": f"bench-copy-{i}"})
        assert reply.status == 200, reply.body
    assert len(server.get("/api/tags").json()["models"]) == MODELS_IN_STORE


def measure(args: argparse.Namespace) -> dict:
    threads = psutil.cpu_count(logical=False) or 1
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "models"
        bootstrap_store(store)
        server = Server(store).start()
        try:
            fill_store(server)
            rss_started = rss_mb(server)
            model_path = max((store / "blobs").glob("sha256-*"), key=lambda p: p.stat().st_size)
            loads, raws = [], []
            raw: RawLoad | None = None
            for _ in range(args.rounds):  # alternate the two so drift hits both alike
                loads.append(cold_load(server))
                if raw is None:
                    raw = RawLoad(model_path, server.get("/api/ps").json()["models"][0]
                                  ["context_length"], threads)
                raws.append(raw.seconds())
            time.sleep(1.0)  # the model stays loaded: the server idles with it
            rss_idle = rss_mb(server)
            rounds = [tags_round(server, args.connections, args.seconds)
                      for _ in range(args.rounds)]
            rss_after = rss_mb(server)
            worker_loads = [float(s) for s in WORKER_LOADED.findall(server.log())]
        finally:
            server.stop()
    best = max(rounds, key=lambda r: r.rps)
    return {
        "tags": {"models": MODELS_IN_STORE, "connections": args.connections,
                 "rps": round(best.rps), "rps_rounds": [round(r.rps) for r in rounds],
                 "p50_ms": round(statistics.median(best.latencies) * 1e3, 2),
                 "p95_ms": round(pct(best.latencies, 0.95) * 1e3, 2),
                 "server_cpu": round(best.server_cpu / best.wall, 2),
                 "client_cpu": round(best.client_cpu / best.wall, 2)},
        "rss_mb": {"started": round(rss_started, 1), "idle_loaded": round(rss_idle, 1),
                   "after_tags": round(rss_after, 1)},
        "load_s": {"served": [round(s, 3) for s in loads], "worker": worker_loads,
                   "raw": [round(s, 3) for s in raws],
                   "gap_best": round(min(loads) - min(raws), 3),
                   "gap_median": round(statistics.median(loads) - statistics.median(raws), 3)},
        "threads": threads,
    }


def print_report(result: dict) -> None:
    tags, rss, load = result["tags"], result["rss_mb"], result["load_s"]
    print(f"GET /api/tags, {tags['models']} models, {tags['connections']} keep-alive connections:"
          f" {tags['rps']} requests/s (rounds {tags['rps_rounds']}; target >= 5000),"
          f" p50 {tags['p50_ms']} ms, p95 {tags['p95_ms']} ms;"
          f" CPU cores busy: server {tags['server_cpu']}, client {tags['client_cpu']}")
    print(f"front-end RSS: {rss['started']} MB started, {rss['idle_loaded']} MB idle with the model"
          f" loaded (target <= 80), {rss['after_tags']} MB after the /api/tags rounds")
    print(f"cold load: served load_duration {load['served']} s (the worker logged "
          f"{load['worker']} s), raw load + context {load['raw']} s; gap {load['gap_best']} s"
          f" best, {load['gap_median']} s median (target <= 0.3)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="length of a /api/tags round")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each measurement")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    result = measure(args)
    if args.json:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    else:
        print_report(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

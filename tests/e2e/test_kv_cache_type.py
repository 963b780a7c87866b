"""OLLAMA_KV_CACHE_TYPE on the real server and model: each type serves, and the quantized ones
take the memory their block sizes say, in the worker and in /api/ps."""

from __future__ import annotations

from typing import Callable

import psutil

from tests.e2e.conftest import MODEL
from tests.e2e.server import Server

# One slot of a long context: the KV cache is most of what a type changes.
LONG = {"num_ctx": 32768, "num_predict": 8, "temperature": 0}


def _loaded(make_server: Callable[..., Server], cache_type: str) -> tuple[str, int, int]:
    """(the answer, /api/ps size, the worker's resident bytes) of a server of this cache type."""
    srv = make_server(OLLAMA_KV_CACHE_TYPE=cache_type, OLLAMA_NUM_PARALLEL="1")
    reply = srv.post("/api/generate", {"model": MODEL, "prompt": "Name a colour.",
                                       "stream": False, "options": LONG})
    assert reply.status == 200, reply.body
    [model] = srv.get("/api/ps").json()["models"]
    assert srv.process is not None
    [worker] = [p for p in psutil.Process(srv.process.pid).children()
                if "spawn_main" in " ".join(p.cmdline())
                and "resource_tracker" not in " ".join(p.cmdline())]
    rss = worker.memory_info().rss
    srv.stop()
    return reply.json()["response"], model["size"], rss


def test_each_kv_cache_type_serves_and_a_quantized_cache_is_smaller_in_ps_and_in_memory(
        make_server: Callable[..., Server]) -> None:
    f16, q8_0, q4_0 = (_loaded(make_server, t) for t in ("f16", "q8_0", "q4_0"))
    assert all(answer.strip() for answer, _, _ in (f16, q8_0, q4_0))
    # /api/ps follows the estimate: q8_0 keeps 34 bytes per 32 values, q4_0 18, f16 64.
    assert f16[1] > q8_0[1] > q4_0[1]
    # The worker holds what the estimate says it saves: at least half of it, measured.
    assert f16[2] - q8_0[2] > (f16[1] - q8_0[1]) // 2
    assert q8_0[2] - q4_0[2] > (q8_0[1] - q4_0[1]) // 2

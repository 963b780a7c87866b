#!/usr/bin/env python3
"""Speculative decoding by prompt lookup: tokens/s with CORRAL_SPECULATIVE off, auto and always,
measured in one run on two workloads, at 1 and 8 concurrent streams.

    .venv/bin/python bench/speculation.py [--tokens 96] [--levels 1,8] [--repeat 2] [--draft]

`--draft` runs a model with a draft model instead: the demo model's own weights (the only model
of its vocabulary at hand), which shows what drafting and verifying cost when every guess is good.

- rewrite: raw prompts that ask for a copy of a code snippet (the answer repeats its prompt:
  what prompt lookup is for);
- story: the throughput bench's story prompts (little to look up: drafting must not lose).
Each figure is the best of `--repeat` rounds, the servers' rounds interleaved (noisy machines);
the ratio is each setting's tokens/s over off's, with the share of drafted tokens kept.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.server import Server, bootstrap_store  # noqa: E402

MODEL = "gemma3:270m"
DRAFTED = "gemma3:drafted"
SNIPPETS = [f"def {name}(items):\n    result = 0\n    for item in items:\n"
            f"        result += item.{field} * item.count\n    return result\n\n"
            f"def {name}_average(items):\n    return {name}(items) / len(items)\n"
            for name, field in (("total", "price"), ("weight", "mass"), ("volume", "size"),
                                ("cost", "fee"), ("score", "points"), ("load", "bytes"),
                                ("area", "width"), ("time", "hours"))]
WORKLOADS = {
    "rewrite": [{"raw": True, "prompt": f"Original:\n{s}\nCopy:\n"} for s in SNIPPETS],
    "story": [{"prompt": f"Write a long story about a {animal} who learns to sail."}
              for animal in ("cat", "dog", "fox", "owl", "bear", "wolf", "hare", "seal")],
}
SETTINGS = ("off", "auto", "always")


async def one(session: aiohttp.ClientSession, url: str, body: dict, tokens: int) -> int:
    request = {"model": body.get("model", MODEL), "stream": False, **body,
               "options": {"num_predict": tokens, "temperature": 0}}
    async with session.post(f"{url}/api/generate", json=request) as resp:
        return (await resp.json())["eval_count"]


async def round_tps(url: str, bodies: list[dict], tokens: int) -> float:
    async with aiohttp.ClientSession() as session:
        start = time.perf_counter()
        counts = await asyncio.gather(*(one(session, url, b, tokens) for b in bodies))
        return sum(counts) / (time.perf_counter() - start)


def metric(server: Server, name: str) -> float:
    lines = server.get("/metrics").body.decode().splitlines()
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if line.startswith(name))


def create_drafted(server: Server) -> None:
    """DRAFTED: the demo model drafting for itself (DRAFT may name a blob of the store)."""
    shown = server.post("/api/show", {"model": MODEL}).json()["modelfile"]
    weights = next(line[5:] for line in shown.splitlines() if line.startswith("FROM "))
    reply = server.post("/api/create", {"model": DRAFTED, "stream": False,
                                        "modelfile": f"FROM {MODEL}\nDRAFT {weights}\n"})
    assert reply.status == 200, reply.body


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=96)
    parser.add_argument("--levels", default="1,8")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--draft", action="store_true", help="a model with a draft model")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    model = DRAFTED if args.draft else MODEL
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "models"
        bootstrap_store(store)
        servers = {s: Server(store, env={"CORRAL_SPECULATIVE": s, "OLLAMA_KEEP_ALIVE": "-1"})
                   for s in SETTINGS}
        try:
            for server in servers.values():
                server.start()
            if args.draft:
                create_drafted(servers["off"])
            for server in servers.values():
                asyncio.run(round_tps(f"http://{server.base}", [{"model": model, "prompt": "Hi"}],
                                      4))
            print(f"model {model}, {args.tokens} tokens a request, greedy; tokens/s "
                  f"(x off), kept: accepted/drafted\n")
            print(f"{'workload':>8} {'streams':>7} " + " ".join(f"{s:>22}" for s in SETTINGS))
            for workload, bodies in WORKLOADS.items():
                for n in levels:
                    chosen = [{**bodies[i % len(bodies)], "model": model} for i in range(n)]
                    best = dict.fromkeys(SETTINGS, 0.0)
                    kept = {}
                    for _ in range(args.repeat):
                        for setting, server in servers.items():
                            url = f"http://{server.base}"
                            drafted = metric(server, "corral_speculative_drafted_tokens_total")
                            accepted = metric(server, "corral_speculative_accepted_tokens_total")
                            best[setting] = max(best[setting],
                                                asyncio.run(round_tps(url, chosen, args.tokens)))
                            kept[setting] = (
                                metric(server, "corral_speculative_accepted_tokens_total")
                                - accepted,
                                metric(server, "corral_speculative_drafted_tokens_total")
                                - drafted)
                    cells = [f"{best[s]:7.1f} ({best[s] / best['off']:.2f}x) "
                             f"{int(kept[s][0]):>4}/{int(kept[s][1]):<4}" for s in SETTINGS]
                    print(f"{workload:>8} {n:>7} " + " ".join(f"{c:>22}" for c in cells))
        finally:
            for server in servers.values():
                if server.process is not None:
                    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""What the prompt cache saves: prompt tokens not computed and time to first token.

    .venv/bin/python bench/prefix.py [--json]

Two scenarios on one server with default settings, each against the same work made uncacheable
(a unique line at the very start of the prompt, so no earlier cells match):
- a 3-turn chat (a ~300-token first message, 32-token answers): TTFT of turns 2 and 3;
- 8 requests at once sharing a ~1,000-token system prompt (after one earlier request with it):
  TTFT p50/p95 of the 8.
Saved tokens come from the server's corral_prompt_cached_tokens_total.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiohttp
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.server import Server, bootstrap_store  # noqa: E402
from tests.prometheus import sample_value  # noqa: E402

MODEL = "gemma3:270m"
OPTIONS = {"num_predict": 32, "temperature": 0}
FIRST = "Here is my situation in detail. " + "I keep bees on a small farm by the river. " * 30
SYSTEM = "You are a careful assistant for a shipping company. " * 100  # ~1,000 tokens


async def chat(session: aiohttp.ClientSession, url: str,
               messages: list[dict]) -> tuple[float, dict]:
    """(seconds to the first token, the final message with the whole answer)."""
    sent, first, content, final = time.perf_counter(), 0.0, "", {}
    body = {"model": MODEL, "messages": messages, "options": OPTIONS}
    async with session.post(f"{url}/api/chat", json=body) as resp:
        async for line in resp.content:
            if not line.strip():
                continue
            msg = orjson.loads(line)
            if msg["done"]:
                final = msg
                break
            first = first or time.perf_counter()
            content += msg["message"]["content"]
    final["content"] = content
    return first - sent, final


async def cached_tokens(session: aiohttp.ClientSession, url: str) -> float:
    async with session.get(f"{url}/metrics") as resp:
        text = await resp.text()
    return sample_value(text, "corral_prompt_cached_tokens_total", model=MODEL) or 0.0


async def three_turns(url: str, cacheable: bool) -> dict:
    messages = [{"role": "user", "content": FIRST}]
    ttft, prompt_tokens = [], []
    async with aiohttp.ClientSession() as session:
        before = await cached_tokens(session, url)
        for follow in ("What should I do first?", "And in winter?", None):
            # Uncacheable: a new first line each turn, so no earlier cells match.
            start = [] if cacheable else [{"role": "system", "content": str(uuid.uuid4())}]
            seconds, final = await chat(session, url, start + messages)
            ttft.append(seconds)
            prompt_tokens.append(final["prompt_eval_count"])
            if follow is None:
                break
            messages += [{"role": "assistant", "content": final["content"]},
                         {"role": "user", "content": follow}]
        saved = await cached_tokens(session, url) - before
    return {"ttft_ms": [round(t * 1e3, 1) for t in ttft], "prompt_tokens": prompt_tokens,
            "cached_tokens": int(saved)}


async def shared_system(url: str, cacheable: bool) -> dict:
    def messages(i: int) -> list[dict]:
        system = SYSTEM if cacheable else f"{uuid.uuid4()} {SYSTEM}"
        return [{"role": "system", "content": system},
                {"role": "user", "content": f"Where is parcel number {1000 + i}?"}]

    async with aiohttp.ClientSession() as session:
        await chat(session, url, messages(99))  # an earlier request with the same system prompt
        before = await cached_tokens(session, url)
        results = await asyncio.gather(*(chat(session, url, messages(i)) for i in range(8)))
        saved = await cached_tokens(session, url) - before
    ttft = sorted(t for t, _ in results)
    return {"ttft_p50_ms": round(statistics.median(ttft) * 1e3, 1),
            "ttft_p95_ms": round(ttft[-1] * 1e3, 1),
            "prompt_tokens": sum(f["prompt_eval_count"] for _, f in results),
            "cached_tokens": int(saved)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "models"
        bootstrap_store(store)
        server = Server(store, env={"OLLAMA_KEEP_ALIVE": "-1"}).start()
        url = f"http://{server.base}"
        try:
            asyncio.run(three_turns(url, cacheable=False))  # load the model, warm up
            result = {
                "chat_cached": asyncio.run(three_turns(url, cacheable=True)),
                "chat_uncached": asyncio.run(three_turns(url, cacheable=False)),
                "system_cached": asyncio.run(shared_system(url, cacheable=True)),
                "system_uncached": asyncio.run(shared_system(url, cacheable=False)),
            }
        finally:
            server.stop()
    if args.json:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
        return 0
    chat, plain_chat = result["chat_cached"], result["chat_uncached"]
    system, plain_system = result["system_cached"], result["system_uncached"]
    rows = [(f"3-turn chat, turn {turn + 1} TTFT ({chat['prompt_tokens'][turn]} tokens)",
             f"{chat['ttft_ms'][turn]} ms", f"{plain_chat['ttft_ms'][turn]} ms")
            for turn in range(3)]
    rows += [
        ("3-turn chat, prompt tokens from the cache",
         f"{chat['cached_tokens']} of {sum(chat['prompt_tokens'])}", "0"),
        ("8 at once, shared system prompt, TTFT p50/p95",
         f"{system['ttft_p50_ms']}/{system['ttft_p95_ms']} ms",
         f"{plain_system['ttft_p50_ms']}/{plain_system['ttft_p95_ms']} ms"),
        ("8 at once, prompt tokens from the cache",
         f"{system['cached_tokens']} of {system['prompt_tokens']}", "0"),
    ]
    print(f"{'':<50} {'with the cache':>18} {'without':>18}")
    for label, cached, uncached in rows:
        print(f"{label:<50} {cached:>18} {uncached:>18}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

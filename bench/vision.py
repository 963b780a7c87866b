#!/usr/bin/env python3
"""Images: what encoding one costs and what it does to running text streams, and the memory the
projector adds, on the demo model with the tests' tiny random projector (a 32x32 CLIP tower; a
real projector's encode is far larger, so read the figures as the pipeline's overhead).

    .venv/bin/python bench/vision.py [--repeat 3]

Prints: the image request's prompt time against the same text without the image; p95
inter-token latency of 4 text streams alone and while image requests arrive (best of
`--repeat`); /api/ps size of the model with and without its projector.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.server import Server, bootstrap_store  # noqa: E402
from tests.gguf_files import tiny_clip_projector  # noqa: E402
from tests.images import png  # noqa: E402

MODEL, VISION = "gemma3:270m", "vision:bench"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


async def stream_gaps(session: aiohttp.ClientSession, url: str, prompt: str) -> list[float]:
    body = {"model": VISION, "prompt": prompt, "options": {"num_predict": 64, "temperature": 0}}
    gaps, last = [], 0.0
    async with session.post(f"{url}/api/generate", json=body) as resp:
        async for line in resp.content:
            now = time.perf_counter()
            if last:
                gaps.append(now - last)
            last = now
    return gaps


async def with_images(url: str, images: int) -> float:
    """p95 gap between chunks of 4 text streams while `images` image requests arrive."""
    async with aiohttp.ClientSession() as session:
        streams = [asyncio.ensure_future(stream_gaps(session, url, f"Count to {20 + i}."))
                   for i in range(4)]
        for i in range(images):
            await asyncio.sleep(0.3)
            body = {"model": VISION, "prompt": "Describe this.", "stream": False,
                    "images": [base64.b64encode(png(seed=100 + i)).decode()],
                    "options": {"num_predict": 1}}
            async with session.post(f"{url}/api/generate", json=body) as resp:
                await resp.read()
        gaps = [g for s in await asyncio.gather(*streams) for g in s]
    return pct(gaps, 0.95)


def prompt_ms(server: Server, images: list[bytes], seed: int) -> float:
    body = {"model": VISION, "prompt": f"Describe this, take {seed}.", "stream": False,
            "images": [base64.b64encode(i).decode() for i in images],
            "options": {"num_predict": 1}}
    return server.post("/api/generate", body).json()["prompt_eval_duration"] / 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "models"
        bootstrap_store(store)
        server = Server(store, env={"OLLAMA_KEEP_ALIVE": "-1"}).start()
        try:
            projector = tiny_clip_projector(Path(tmp) / "mmproj.gguf").read_bytes()
            digest = f"sha256:{hashlib.sha256(projector).hexdigest()}"
            server.post(f"/api/blobs/{digest}", raw=projector)
            weights = next(line.split(" ", 1)[1] for line in server.post(
                "/api/show", {"model": MODEL}).json()["modelfile"].splitlines()
                if line.startswith("FROM "))
            server.post("/api/create", {"model": VISION, "stream": False, "files": {
                "gemma.gguf": "sha256:" + Path(weights).name.split("-", 1)[1],
                "mmproj.gguf": digest}})
            url = f"http://{server.base}"
            text = min(prompt_ms(server, [], i) for i in range(args.repeat))
            image = min(prompt_ms(server, [png(seed=i)], i) for i in range(args.repeat))
            alone = min(asyncio.run(with_images(url, 0)) for _ in range(args.repeat))
            mixed = min(asyncio.run(with_images(url, 3)) for _ in range(args.repeat))
            sizes = {m["name"]: m["size"] for m in server.get("/api/ps").json()["models"]}
            server.post("/api/generate", {"model": MODEL, "prompt": "hi", "stream": False,
                                          "options": {"num_predict": 1}})
            sizes.update({m["name"]: m["size"] for m in server.get("/api/ps").json()["models"]})
        finally:
            server.stop()
    print(f"prompt time: {text:.1f} ms text alone, {image:.1f} ms with one image "
          f"(+{image - text:.1f} ms to decode, encode and place it)")
    print(f"4 text streams, p95 gap between chunks: {alone * 1e3:.1f} ms alone, "
          f"{mixed * 1e3:.1f} ms while 3 image requests arrive ({mixed / alone:.2f}x)")
    with_projector = sizes.get(f"{VISION}:latest", sizes.get(VISION, 0))
    print(f"/api/ps size: {sizes.get(MODEL, 0) >> 20} MiB without the projector, "
          f"{with_projector >> 20} MiB with it (projector file {len(projector) >> 10} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

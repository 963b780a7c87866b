#!/usr/bin/env python3
"""Aggregate generation throughput: corral over HTTP vs raw llama.cpp, measured in one run.

    .venv/bin/python bench/throughput.py [--tokens 64] [--levels 1,4,8]

For each concurrency level N, N different prompts are sent at once to /api/generate (greedy,
no repeat penalty, `num_predict` tokens each). The same work (same prompts, same number of generated tokens,
same threads) is then done directly with llama-cpp-python's low-level API in this process,
batched the same way. Ratios, not absolute numbers, are the result: these machines are noisy.
It also times N requests one after another against N at once (target: under 0.6x). Each
figure is the best of `--repeat` runs, server and raw alternating.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import orjson
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.e2e.server import Server, bootstrap_store  # noqa: E402

MODEL = "gemma3:270m"
PROMPTS = [f"Write a long story about a {animal} who learns to sail." for animal in
           ("cat", "dog", "fox", "owl", "bear", "wolf", "hare", "seal", "crow", "deer")]


async def one(session: aiohttp.ClientSession, url: str, prompt: str, tokens: int) -> dict:
    body = {"model": MODEL, "prompt": prompt, "stream": True,
            "options": {"num_predict": tokens, "temperature": 0, "repeat_penalty": 1.0}}
    async with session.post(f"{url}/api/generate", json=body) as resp:
        final = {}
        async for line in resp.content:
            if line.strip():
                final = orjson.loads(line)
        return final


async def server_run(url: str, n: int, tokens: int, sequential: bool = False) -> tuple[float, list[dict]]:
    async with aiohttp.ClientSession() as session:
        start = time.perf_counter()
        if sequential:
            finals = [await one(session, url, PROMPTS[i % len(PROMPTS)], tokens) for i in range(n)]
        else:
            finals = await asyncio.gather(*(one(session, url, PROMPTS[i % len(PROMPTS)], tokens)
                                            for i in range(n)))
        return time.perf_counter() - start, list(finals)


def raw_run(model_path: str, prompts: list[str], counts: list[int], threads: int) -> float:
    """The same work on llama.cpp directly: one context, all sequences in each decode."""
    import llama_cpp as llama

    from store.templates import template
    from workers.prompt import render_go

    n = len(prompts)
    mparams = llama.llama_model_default_params()
    model = llama.llama_model_load_from_file(model_path.encode(), mparams)
    vocab = llama.llama_model_get_vocab(model)
    cparams = llama.llama_context_default_params()
    cparams.n_ctx, cparams.n_seq_max, cparams.n_batch = 4096 * n, n, 512
    cparams.n_threads = cparams.n_threads_batch = threads
    cparams.flash_attn_type = 0  # as the worker on CPU
    ctx = llama.llama_init_from_model(model, cparams)
    batch = llama.llama_batch_init(512, 0, 1)
    samplers = [llama.llama_sampler_chain_init(llama.llama_sampler_chain_default_params())
                for _ in range(n)]
    for s in samplers:
        llama.llama_sampler_chain_add(s, llama.llama_sampler_init_greedy())

    def tokenize(text: str) -> list[int]:
        data = text.encode()
        arr = (llama.llama_token * (len(data) + 8))()
        k = llama.llama_tokenize(vocab, data, len(data), arr, len(arr), True, True)
        return list(arr[:k])

    token_lists = [tokenize(render_go(template("gemma3-instruct"), [{"role": "user", "content": p}]))
                   for p in prompts]
    start = time.perf_counter()
    # Prefill all prompts in one batch, logits at each prompt's last token.
    k = 0
    last_index = []
    for seq, toks in enumerate(token_lists):
        for pos, tok in enumerate(toks):
            batch.token[k], batch.pos[k], batch.n_seq_id[k] = tok, pos, 1
            batch.seq_id[k][0], batch.logits[k] = seq, pos == len(toks) - 1
            k += 1
        last_index.append(k - 1)
    batch.n_tokens = k
    llama.llama_decode(ctx, batch)
    pos = [len(t) for t in token_lists]
    produced = [0] * n
    buf = (llama.ctypes.c_char * 256)()
    while True:
        k = 0
        index = {}
        for seq in range(n):
            if produced[seq] >= counts[seq]:
                continue
            tok = llama.llama_sampler_sample(samplers[seq], ctx, last_index[seq])
            llama.llama_token_to_piece(vocab, tok, buf, 256, 0, False)  # detokenize, as served
            produced[seq] += 1
            if produced[seq] < counts[seq]:
                batch.token[k], batch.pos[k], batch.n_seq_id[k] = tok, pos[seq], 1
                batch.seq_id[k][0], batch.logits[k] = seq, True
                index[seq] = k
                pos[seq] += 1
                k += 1
        if k == 0:
            break
        batch.n_tokens = k
        llama.llama_decode(ctx, batch)
        last_index = [index.get(s, -1) for s in range(n)]
    elapsed = time.perf_counter() - start
    for s in samplers:
        llama.llama_sampler_free(s)
    llama.llama_batch_free(batch)
    llama.llama_free(ctx)
    llama.llama_model_free(model)
    return elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--levels", default="1,4,8")
    parser.add_argument("--repeat", type=int, default=3, help="best of N runs for each figure")
    args = parser.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    threads = psutil.cpu_count(logical=False) or 1

    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "models"
        bootstrap_store(store)
        server = Server(store, env={"OLLAMA_NUM_PARALLEL": str(max(levels)),
                                    "OLLAMA_KEEP_ALIVE": "-1"}).start()
        url = f"http://{server.base}"
        try:
            asyncio.run(server_run(url, 1, 4))  # load the model and warm up
            model_path = max((store / "blobs").glob("sha256-*"), key=lambda p: p.stat().st_size)
            print(f"model {MODEL}, {args.tokens} tokens per request, {threads} threads\n")
            print(f"{'concurrent':>10} {'server tok/s':>13} {'raw tok/s':>10} {'server/raw':>11}")
            for n in levels:
                server_tps = raw_tps = 0.0
                for _ in range(args.repeat):  # alternate the two so drift hits both alike
                    wall, finals = asyncio.run(server_run(url, n, args.tokens))
                    counts = [f["eval_count"] for f in finals]
                    server_tps = max(server_tps, sum(counts) / wall)
                    raw_wall = raw_run(str(model_path),
                                       [PROMPTS[i % len(PROMPTS)] for i in range(n)], counts, threads)
                    raw_tps = max(raw_tps, sum(counts) / raw_wall)
                print(f"{n:>10} {server_tps:>13.1f} {raw_tps:>10.1f} {server_tps / raw_tps:>11.2f}")
            n = max(levels)
            seq_wall = min(asyncio.run(server_run(url, n, args.tokens, sequential=True))[0]
                           for _ in range(args.repeat))
            par_wall = min(asyncio.run(server_run(url, n, args.tokens))[0]
                           for _ in range(args.repeat))
            print(f"\n{n} requests at once took {par_wall:.2f}s, one after another {seq_wall:.2f}s: "
                  f"{par_wall / seq_wall:.2f}x (target < 0.6x)")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

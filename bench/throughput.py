#!/usr/bin/env python3
"""Generation throughput and latency: corral over HTTP vs raw llama.cpp, measured in one run.

    .venv/bin/python bench/throughput.py [--tokens 64] [--levels 1,2,4,8,16] [--json]
                                         [--parallel N] [--batch-invariant] [--long-prompt]
                                         [--logprobs K] [--llama-server] [--sampled]

For each concurrency level N, N different prompts are streamed at once from /api/generate
(greedy, no repeat penalty, `--tokens` each) on a server with default settings (or
OLLAMA_NUM_PARALLEL=N with --parallel). The same work (same prompt tokens, same number of
generated tokens, same threads) is then done by the fastest raw loop we know on llama-cpp-python's
low-level API in this process: one context, flash attention as llama.cpp picks it, one unified
KV cache sized to the work, every prompt prefilled in one batch, then all sequences decoded
together, greedy sampling (an argmax, as served) and detokenization. Each figure is the best
of `--repeat` rounds, server and raw alternating, since these machines are noisy: ratios are
the result.

Columns: aggregate generated tokens/s; p50/p95 time to first token (server: request sent to the
first text; raw: start to the first sampled token, i.e. the batched prefill); p95 inter-token
latency (gap between text chunks divided by the tokens they carry); the front end's own CPU
time per streamed token (the `corral serve` process, not its workers, over the server rounds;
on 2 cores every core it takes is taken from llama.cpp's threads).

--llama-server also runs llama-server (bench/llama_server.py builds it once from the llama.cpp
our pinned llama-cpp-python vendors, with our build flags) on the same model file and threads,
with `-np` the highest level and a unified KV cache of 4096 cells a slot, and streams the same
templated prompts to its /completion, alternating with the other two: its tokens/s and corral's
ratio to it come beside raw's.

--sampled samples with the whole chain instead of greedily (Ollama's defaults before 0.32.10:
top-k 40, repeat penalty 1.1 over 64 tokens, top-p 0.9, temperature 0.8, a seeded draw), on all three: corral's request
options, llama-server's /completion fields (min-p 0, as Ollama's), and a llama.cpp sampler chain
of the same samplers in the raw loop.

--logprobs K asks every served request for its tokens' logprobs and K top alternatives (the raw
loop computes none): the ratio against a run without it is what logprobs cost.

--long-prompt adds the admission test: p95 inter-token latency of 4 streams with and without an
8,000-token prompt arriving while they run (target: at most 2x).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable
from pathlib import Path

import aiohttp
import numpy as np
import orjson
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.llama_server import LlamaServer  # noqa: E402
from tests.e2e.server import Server, bootstrap_store  # noqa: E402

MODEL = "gemma3:270m"
PROMPTS = [f"Write a long story about a {animal} who learns to {skill}." for skill in
           ("sail", "sing") for animal in
           ("cat", "dog", "fox", "owl", "bear", "wolf", "hare", "seal")]
GREEDY = {"temperature": 0, "repeat_penalty": 1.0}
# Ollama's default sampling before 0.32.10 (a repeat penalty: every stage runs), seeded; --sampled
SAMPLED = {"temperature": 0.8, "top_k": 40, "top_p": 0.9, "min_p": 0.0, "repeat_penalty": 1.1,
           "repeat_last_n": 64, "seed": 42}
SAMPLING = GREEDY  # what every request of this run asks for


@dataclass
class Stream:
    """One request as the client saw it."""
    sent: float
    first: float = 0.0
    gaps: list[float] = field(default_factory=list)  # seconds per token between chunks
    tokens: int = 0


@dataclass
class Round:
    wall: float
    tokens: int
    ttft: list[float]
    gaps: list[float]

    @property
    def tps(self) -> float:
        return self.tokens / self.wall


async def timed_stream(session: aiohttp.ClientSession, url: str, body: dict,
                       message: Callable[[bytes], dict | None],
                       done: Callable[[dict], int | None]) -> Stream:
    """One streamed answer, timed as its lines arrive: `message` reads a line (None: not one),
    `done` gives the answer's token count from its last message (None for the others)."""
    record = Stream(time.perf_counter())
    last = 0.0
    async with session.post(url, json=body) as resp:
        async for line in resp.content:
            msg = message(line)
            if msg is None:
                continue
            now = time.perf_counter()
            count = done(msg)
            if count is not None:
                record.tokens = count
                break
            if not record.first:
                record.first = now
            elif last:
                record.gaps.append(now - last)
            last = now
    return record


async def stream(session: aiohttp.ClientSession, url: str, prompt: str, tokens: int,
                 extra: dict | None = None) -> Stream:
    """One NDJSON /api/generate stream from corral; `extra`: more request fields (logprobs)."""
    body = {"model": MODEL, "prompt": prompt, "stream": True,
            "options": {"num_predict": tokens, **SAMPLING}, **(extra or {})}
    return await timed_stream(session, f"{url}/api/generate", body,
                              lambda line: orjson.loads(line) if line.strip() else None,
                              lambda msg: msg["eval_count"] if msg["done"] else None)


async def peer_stream(session: aiohttp.ClientSession, url: str, prompt: str,
                      tokens: int) -> Stream:
    """One streamed /completion from llama-server (its SSE `data:` lines)."""
    body = {"prompt": prompt, "n_predict": tokens, "stream": True, "cache_prompt": True,
            **SAMPLING}
    return await timed_stream(
        session, f"{url}/completion", body,
        lambda line: orjson.loads(line[6:]) if line.startswith(b"data: ") else None,
        lambda msg: msg.get("tokens_predicted", 0) if msg.get("stop") else None)


async def peer_round(url: str, prompts: list[str], tokens: int) -> Round:
    async with aiohttp.ClientSession() as session:
        start = time.perf_counter()
        streams = await asyncio.gather(*(peer_stream(session, url, p, tokens) for p in prompts))
        wall = time.perf_counter() - start
    return Round(wall, sum(s.tokens for s in streams), [s.first - s.sent for s in streams],
                 [g for s in streams for g in s.gaps])


async def server_round(url: str, n: int, tokens: int, extra: dict | None = None) -> Round:
    async with aiohttp.ClientSession() as session:
        start = time.perf_counter()
        streams = await asyncio.gather(*(stream(session, url, PROMPTS[i % len(PROMPTS)], tokens,
                                                extra) for i in range(n)))
        wall = time.perf_counter() - start
    return Round(wall, sum(s.tokens for s in streams), [s.first - s.sent for s in streams],
                 [g for s in streams for g in s.gaps])


class Raw:
    """The reference: llama.cpp driven directly, model loaded once."""

    def __init__(self, model_path: str, threads: int) -> None:
        import llama_cpp as llama  # noqa: PLC0415

        from store.templates import template  # noqa: PLC0415
        from workers.template.render import render_go  # noqa: PLC0415

        self.llama, self.threads = llama, threads
        self._quiet = llama.llama_log_callback(lambda level, text, user: None)  # kept: C holds it
        llama.llama_log_set(self._quiet, llama.ctypes.c_void_p(0))
        self.model = llama.llama_model_load_from_file(model_path.encode(),
                                                      llama.llama_model_default_params())
        self.vocab = llama.llama_model_get_vocab(self.model)
        self.prompt_text = lambda p: render_go(template("gemma3-instruct"),
                                               [{"role": "user", "content": p}])

    def tokenize(self, text: str) -> list[int]:
        llama, data = self.llama, text.encode()
        arr = (llama.llama_token * (len(data) + 8))()
        k = llama.llama_tokenize(self.vocab, data, len(data), arr, len(arr), True, True)
        return list(arr[:k])

    def _chain(self):  # type: ignore[no-untyped-def]
        """SAMPLED as a plain llama.cpp program samples: top-k, penalties, top-p, temperature,
        a seeded draw, on the whole row each time."""
        llama = self.llama
        chain = llama.llama_sampler_chain_init(llama.llama_sampler_chain_default_params())
        for sampler in (llama.llama_sampler_init_top_k(SAMPLED["top_k"]),
                        llama.llama_sampler_init_penalties(
                            llama.llama_vocab_n_tokens(self.vocab), SAMPLED["repeat_last_n"],
                            SAMPLED["repeat_penalty"], 0.0, 0.0),
                        llama.llama_sampler_init_top_p(SAMPLED["top_p"], 1),
                        llama.llama_sampler_init_temp(SAMPLED["temperature"]),
                        llama.llama_sampler_init_dist(SAMPLED["seed"])):
            llama.llama_sampler_chain_add(chain, sampler)
        return chain

    def run(self, prompts: list[str], counts: list[int]) -> Round:
        llama, n = self.llama, len(prompts)
        token_lists = [self.tokenize(self.prompt_text(p)) for p in prompts]
        cparams = llama.llama_context_default_params()
        need = sum(len(t) for t in token_lists) + sum(counts)
        cparams.n_ctx = max(256, -(-need // 256) * 256)  # the cells the work needs, no more
        cparams.n_seq_max, cparams.n_batch, cparams.n_ubatch = n, 512, 512
        cparams.n_threads = cparams.n_threads_batch = self.threads
        cparams.kv_unified = True
        cparams.flash_attn_type = -1
        ctx = llama.llama_init_from_model(self.model, cparams)
        batch = llama.llama_batch_init(max(512, need), 0, 1)
        n_vocab = llama.llama_vocab_n_tokens(self.vocab)
        chain = self._chain() if SAMPLING is SAMPLED else None
        buf = (llama.ctypes.c_char * 256)()
        start = time.perf_counter()
        k, last_index = 0, []
        for seq, toks in enumerate(token_lists):  # every prompt in one batch
            for pos, tok in enumerate(toks):
                batch.token[k], batch.pos[k], batch.n_seq_id[k] = tok, pos, 1
                batch.seq_id[k][0], batch.logits[k] = seq, pos == len(toks) - 1
                k += 1
            last_index.append(k - 1)
        batch.n_tokens = k
        llama.llama_decode(ctx, batch)
        pos = [len(t) for t in token_lists]
        produced = [0] * n
        first, gaps, stamps = 0.0, [], [0.0] * n
        while True:
            k, index = 0, {}
            for seq in range(n):
                if produced[seq] >= counts[seq]:
                    continue
                if chain is not None:  # one chain for all: same samplers, same work
                    tok = llama.llama_sampler_sample(chain, ctx, last_index[seq])
                else:  # greedy as served (workers/sampling.py): the argmax of the logits row
                    tok = int(np.ctypeslib.as_array(
                        llama.llama_get_logits_ith(ctx, last_index[seq]), shape=(n_vocab,)).argmax())
                llama.llama_token_to_piece(self.vocab, tok, buf, 256, 0, False)
                now = time.perf_counter()
                if stamps[seq]:
                    gaps.append(now - stamps[seq])
                stamps[seq] = now
                first = first or now
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
        wall = time.perf_counter() - start
        if chain is not None:
            llama.llama_sampler_free(chain)
        llama.llama_batch_free(batch)
        llama.llama_free(ctx)
        return Round(wall, sum(counts), [first - start] * n, gaps)


def pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def measure_levels(url: str, front_end: psutil.Process, raw: Raw, levels: list[int],
                   tokens: int, repeat: int, extra: dict | None = None,
                   peer: str | None = None) -> list[dict]:
    """`front_end`: the `corral serve` process alone (its workers are children of their own),
    whose CPU time per streamed token is measured over the server's rounds; `peer`: a
    llama-server's URL, measured in the same rounds."""
    rows = []
    for n in levels:
        best_server: Round | None = None
        best_raw: Round | None = None
        best_peer = 0.0
        front_cpu, streamed = 0.0, 0
        for _ in range(repeat):  # alternate them so drift hits all alike
            if peer is not None:
                texts = [raw.prompt_text(PROMPTS[i % len(PROMPTS)]) for i in range(n)]
                best_peer = max(best_peer, asyncio.run(peer_round(peer, texts, tokens)).tps)
            before = cpu_seconds(front_end)
            served = asyncio.run(server_round(url, n, tokens, extra))
            front_cpu += cpu_seconds(front_end) - before
            streamed += served.tokens
            counts = [tokens] * n if served.tokens == tokens * n else None
            direct = raw.run([PROMPTS[i % len(PROMPTS)] for i in range(n)],
                             counts or [max(1, served.tokens // n)] * n)
            if best_server is None or served.tps > best_server.tps:
                best_server = served
            if best_raw is None or direct.tps > best_raw.tps:
                best_raw = direct
        assert best_server is not None and best_raw is not None
        rows.append({
            "concurrent": n,
            "server_tps": round(best_server.tps, 1), "raw_tps": round(best_raw.tps, 1),
            "ratio": round(best_server.tps / best_raw.tps, 3),
            "ttft_p50_ms": round(statistics.median(best_server.ttft) * 1e3, 1),
            "ttft_p95_ms": round(pct(best_server.ttft, 0.95) * 1e3, 1),
            "raw_ttft_ms": round(best_raw.ttft[0] * 1e3, 1),
            "itl_p95_ms": round(pct(best_server.gaps, 0.95) * 1e3, 1),
            "raw_itl_p95_ms": round(pct(best_raw.gaps, 0.95) * 1e3, 1),
            "front_end_ms_per_token": round(front_cpu / max(1, streamed) * 1e3, 3),
            **({"llama_server_tps": round(best_peer, 1),
                "vs_llama_server": round(best_server.tps / best_peer, 3)} if peer else {}),
        })
    return rows


async def long_prompt_itl(url: str, tokens: int, with_long: bool) -> float:
    """p95 inter-token latency of 4 streams, with an 8,000-token prompt sent once they run."""
    async with aiohttp.ClientSession() as session:
        runs = [asyncio.ensure_future(stream(session, url, PROMPTS[i], tokens)) for i in range(4)]
        if with_long:
            await asyncio.sleep(1.0)
            long_text = "The quick brown fox jumps over the lazy dog. " * 800  # ~8,000 tokens
            await stream(session, url, long_text, 1)
        streams = await asyncio.gather(*runs)
    return pct([g for s in streams for g in s.gaps], 0.95)


def print_table(rows: list[dict]) -> None:
    peer = bool(rows) and "llama_server_tps" in rows[0]
    head = (f"{'streams':>7} {'server tok/s':>12} {'raw tok/s':>10} {'ratio':>6} "
            f"{'TTFT p50':>9} {'TTFT p95':>9} {'raw TTFT':>9} {'ITL p95':>8} {'raw ITL p95':>11} "
            f"{'front end':>14}")
    print(head + (f" {'llama-server':>12} {'vs it':>6}" if peer else ""))
    for r in rows:
        print(f"{r['concurrent']:>7} {r['server_tps']:>12.1f} {r['raw_tps']:>10.1f} "
              f"{r['ratio']:>6.2f} {r['ttft_p50_ms']:>7.1f}ms {r['ttft_p95_ms']:>7.1f}ms "
              f"{r['raw_ttft_ms']:>7.1f}ms {r['itl_p95_ms']:>6.1f}ms {r['raw_itl_p95_ms']:>9.1f}ms "
              f"{r['front_end_ms_per_token']:>6.3f}ms/token"
              + (f" {r['llama_server_tps']:>12.1f} {r['vs_llama_server']:>6.2f}" if peer else ""))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--levels", default="1,2,4,8,16")
    parser.add_argument("--repeat", type=int, default=3, help="best of N rounds for each figure")
    parser.add_argument("--parallel", type=int, default=0,
                        help="OLLAMA_NUM_PARALLEL for the server (default: auto)")
    parser.add_argument("--batch-invariant", action="store_true",
                        help="serve with CORRAL_BATCH_INVARIANT=1")
    parser.add_argument("--long-prompt", action="store_true",
                        help="also measure streams' latency while an 8,000-token prompt is admitted")
    parser.add_argument("--sampled", action="store_true",
                        help="sample with Ollama's default options instead of greedily")
    parser.add_argument("--logprobs", type=int, default=-1, metavar="K",
                        help="ask each served request for logprobs with K top alternatives")
    parser.add_argument("--llama-server", action="store_true",
                        help="also measure llama-server on the same model (built once)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    global SAMPLING
    SAMPLING = SAMPLED if args.sampled else GREEDY
    levels = [int(x) for x in args.levels.split(",")]
    threads = psutil.cpu_count(logical=False) or 1
    env = {"OLLAMA_KEEP_ALIVE": "-1", "OLLAMA_CONTEXT_LENGTH": "9000" if args.long_prompt else "4096"}
    if args.parallel:
        env["OLLAMA_NUM_PARALLEL"] = str(args.parallel)
    if args.batch_invariant:
        env["CORRAL_BATCH_INVARIANT"] = "1"

    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "models"
        bootstrap_store(store)
        server = Server(store, env=env).start()
        url = f"http://{server.base}"
        try:
            asyncio.run(server_round(url, 1, 4))  # load the model and warm up
            model_path = max((store / "blobs").glob("sha256-*"), key=lambda p: p.stat().st_size)
            raw = Raw(str(model_path), threads)
            extra = ({"logprobs": True, "top_logprobs": args.logprobs}
                     if args.logprobs >= 0 else {})
            assert server.process is not None
            peer = (LlamaServer(model_path, threads, max(levels), 4096)
                    if args.llama_server else None)
            try:
                rows = measure_levels(url, psutil.Process(server.process.pid), raw, levels,
                                      args.tokens, args.repeat, extra, peer and peer.url)
            finally:
                if peer is not None:
                    peer.stop()
            result: dict = {"model": MODEL, "tokens": args.tokens, "threads": threads,
                            "settings": env, "request": extra, "sampling": SAMPLING,
                            "levels": rows}
            if args.long_prompt:
                base = min(asyncio.run(long_prompt_itl(url, 200, False)) for _ in range(2))
                loaded = min(asyncio.run(long_prompt_itl(url, 200, True)) for _ in range(2))
                result["long_prompt"] = {"itl_p95_ms": round(base * 1e3, 1),
                                         "itl_p95_with_long_ms": round(loaded * 1e3, 1),
                                         "ratio": round(loaded / base, 2)}
        finally:
            server.stop()
    if args.json:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
        return 0
    print(f"model {MODEL}, {args.tokens} tokens per request, {threads} threads, "
          f"server settings {env}, request fields {extra}, sampling {SAMPLING}\n")
    print_table(rows)
    if args.long_prompt:
        lp = result["long_prompt"]
        print(f"\n4 streams, p95 inter-token latency: {lp['itl_p95_ms']} ms alone, "
              f"{lp['itl_p95_with_long_ms']} ms while an 8,000-token prompt is admitted "
              f"({lp['ratio']}x, target <= 2x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

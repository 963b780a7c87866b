"""How requests share a model through the HTTP API: slots sized by memory, the prompt cache,
and batch-invariant mode."""

from __future__ import annotations

import http.client
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import orjson

from tests.e2e.conftest import MODEL
from tests.e2e.server import Server

SEEDED = {"num_predict": 24, "temperature": 0.9, "seed": 4242}
ANIMALS = ("cat", "dog", "fox", "owl", "bear", "wolf", "hare", "seal")


def generate(server: Server, prompt: str, options: dict) -> dict:
    reply = server.post("/api/generate", {"model": MODEL, "prompt": prompt, "stream": False,
                                          "options": options}, timeout=300)
    assert reply.status == 200, reply.body
    return reply.json()


def timed_stream(server: Server, prompt: str) -> tuple[float, float]:
    """(when the first token arrived, when the answer ended), by the monotonic clock."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=300)
    conn.request("POST", "/api/generate", orjson.dumps(
        {"model": MODEL, "prompt": prompt, "options": {"num_predict": 32, "temperature": 0}}))
    resp = conn.getresponse()
    assert resp.status == 200
    first = 0.0
    for line in resp:
        if not first:
            first = time.monotonic()
        if orjson.loads(line)["done"]:
            break
    conn.close()
    return first, time.monotonic()


def test_default_settings_run_16_requests_at_once(server: Server) -> None:
    prompts = [f"Tell me about the {animal} number {i}." for i in range(2) for animal in ANIMALS]
    with ThreadPoolExecutor(len(prompts)) as pool:
        spans = list(pool.map(lambda p: timed_stream(server, p), prompts))
    first_end = min(end for _, end in spans)
    assert all(first < first_end for first, _ in spans)  # all had begun before any ended


def test_a_seeded_request_repeats_its_tokens_when_its_prompt_comes_from_the_cache(
        server: Server) -> None:
    prompt = "Write a short poem about the harbour at dawn."
    first = generate(server, prompt, SEEDED)
    generate(server, "Something else entirely, to move the cache around.", SEEDED)
    again = generate(server, prompt, SEEDED)
    assert again["response"] == first["response"]


def test_batch_invariant_mode_gives_a_seeded_request_the_same_tokens_alone_and_among_8(
        make_server: Callable[..., Server]) -> None:
    server = make_server(CORRAL_BATCH_INVARIANT="1")
    prompt = "Write a short poem about the harbour at dawn."
    alone = generate(server, prompt, SEEDED)["response"]
    others = [f"Tell me about the {animal}." for animal in ANIMALS[:7]]
    with ThreadPoolExecutor(8) as pool:
        replies = list(pool.map(lambda p: generate(server, p, SEEDED), [prompt, *others]))
    assert replies[0]["response"] == alone

"""Images end to end on the real server: the demo model with a tiny random projector (written by
tests/gguf_files.py; its answers are nonsense, the pipeline is real): images through /api/generate,
/api/chat, the ollama and openai clients and the CLI, the prompt cache, batching beside text
streams, and every bad image a 400 that leaves the server healthy."""

from __future__ import annotations

import base64
import struct
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import anthropic
import ollama
import openai
import pytest

from tests.e2e.conftest import MODEL
from tests.e2e.server import Server
from tests.e2e.test_cli import corral
from tests.e2e.test_vision_store import _upload, _weights_digest
from tests.gguf_files import PROJECTOR_IMAGE_TOKENS, tiny_clip_projector
from tests.images import png

VISION = "vision:e2e"
GREEDY = {"num_predict": 8, "temperature": 0, "seed": 1}
ASK = "What is in this picture?"


@pytest.fixture(scope="module")
def vision(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    projector = tiny_clip_projector(tmp_path_factory.mktemp("vision") / "mmproj.gguf", seed=21)
    reply = server.post("/api/create", {"model": VISION, "stream": False, "files": {
        "gemma.gguf": _weights_digest(server), "mmproj.gguf": _upload(server, projector)}})
    assert reply.status == 200, reply.body
    yield VISION
    # Unloaded first: the session's server must be left as it was found (tests read /api/ps).
    assert server.post("/api/generate", {"model": VISION, "keep_alive": 0}).status == 200
    server.request("DELETE", "/api/delete", {"model": VISION})


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def generate(server: Server, model: str, *images: bytes, prompt: str = ASK) -> dict:
    reply = server.post("/api/generate", {"model": model, "prompt": prompt, "stream": False,
                                          "options": GREEDY, "images": [b64(i) for i in images]})
    assert reply.status == 200, reply.body
    return reply.json()


def cached_tokens(server: Server) -> float:
    metrics = server.get("/metrics").body.decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
               if line.startswith("corral_prompt_cached_tokens_total"))


def test_an_image_changes_the_answer(server: Server, vision: str) -> None:
    assert generate(server, vision, png(seed=1))["response"] != \
        generate(server, vision)["response"]


def test_two_different_images_give_different_answers(server: Server, vision: str) -> None:
    assert generate(server, vision, png(seed=2))["response"] != \
        generate(server, vision, png(seed=3))["response"]


def test_the_same_image_gives_the_same_tokens_again_from_the_prompt_cache(
        server: Server, vision: str) -> None:
    first = generate(server, vision, png(seed=4))
    before = cached_tokens(server)
    again = generate(server, vision, png(seed=4))
    assert again["response"] == first["response"]
    assert cached_tokens(server) - before > PROJECTOR_IMAGE_TOKENS  # the image came from cache


def test_prompt_eval_count_counts_the_images_positions(server: Server, vision: str) -> None:
    with_image = generate(server, vision, png(seed=5))["prompt_eval_count"]
    assert with_image - generate(server, vision)["prompt_eval_count"] >= PROJECTOR_IMAGE_TOKENS


def test_the_ollama_client_sends_image_paths_in_chat(server: Server, vision: str,
                                                     tmp_path: Path) -> None:
    picture = tmp_path / "picture.png"
    picture.write_bytes(png(seed=6))
    client = ollama.Client(host=f"http://{server.base}")
    reply = client.chat(model=vision, options=GREEDY, messages=[
        {"role": "user", "content": ASK, "images": [str(picture)]}])
    plain = client.chat(model=vision, options=GREEDY, messages=[{"role": "user", "content": ASK}])
    assert reply.message.content and reply.message.content != plain.message.content
    assert reply.prompt_eval_count >= plain.prompt_eval_count + PROJECTOR_IMAGE_TOKENS


def test_openai_image_parts_with_data_urls(server: Server, vision: str) -> None:
    client = openai.OpenAI(base_url=f"http://{server.base}/v1", api_key="unused", max_retries=0)
    reply = client.chat.completions.create(model=vision, max_tokens=8, temperature=0, messages=[
        {"role": "user", "content": [
            {"type": "text", "text": ASK},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64(png(7))}"}}]}])
    assert reply.choices[0].message.content
    assert reply.usage.prompt_tokens >= PROJECTOR_IMAGE_TOKENS


def test_openai_remote_image_urls_are_refused_as_ollama_refuses_them(server: Server,
                                                                     vision: str) -> None:
    client = openai.OpenAI(base_url=f"http://{server.base}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="image URLs are not currently supported"):
        client.chat.completions.create(model=vision, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}])


def test_openai_responses_input_images(server: Server, vision: str) -> None:
    client = openai.OpenAI(base_url=f"http://{server.base}/v1", api_key="unused", max_retries=0)
    reply = client.responses.create(model=vision, max_output_tokens=8, temperature=0, input=[
        {"role": "user", "content": [
            {"type": "input_text", "text": ASK},
            {"type": "input_image", "image_url": f"data:image/png;base64,{b64(png(10))}"}]}])
    assert reply.output_text and reply.usage.input_tokens >= PROJECTOR_IMAGE_TOKENS


def test_anthropic_image_blocks(server: Server, vision: str) -> None:
    client = anthropic.Anthropic(base_url=f"http://{server.base}", api_key="unused",
                                 max_retries=0)
    reply = client.messages.create(model=vision, max_tokens=8, messages=[{"role": "user",
        "content": [{"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                 "data": b64(png(11))}},
                    {"type": "text", "text": ASK}]}])
    assert reply.content[0].text and reply.usage.input_tokens >= PROJECTOR_IMAGE_TOKENS


def test_anthropic_image_urls_are_refused_as_ollama_refuses_them(server: Server,
                                                                 vision: str) -> None:
    client = anthropic.Anthropic(base_url=f"http://{server.base}", api_key="unused",
                                 max_retries=0)
    with pytest.raises(anthropic.BadRequestError, match="image URLs are not currently"):
        client.messages.create(model=vision, max_tokens=8, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]}])


def test_corral_run_attaches_an_image_path_named_in_the_prompt(server: Server, vision: str,
                                                               tmp_path: Path) -> None:
    picture = tmp_path / "cat.png"
    picture.write_bytes(png(seed=8))
    result = corral(server.base, "run", vision, f"describe {picture}")
    assert result.returncode == 0, result.stderr
    assert f"Added image '{picture}'" in result.stderr
    assert result.stdout.strip()


def test_an_image_request_runs_beside_text_streams(server: Server, vision: str) -> None:
    def text(i: int) -> dict:
        reply = server.post("/api/generate", {"model": vision, "prompt": f"Count to {i}.",
                                              "stream": False, "options": {"num_predict": 24}})
        assert reply.status == 200, reply.body
        return reply.json()

    with ThreadPoolExecutor(5) as pool:
        streams = [pool.submit(text, i) for i in range(4)]
        pictured = pool.submit(generate, server, vision, png(seed=9))
        assert all(s.result()["eval_count"] > 0 for s in streams)
        assert pictured.result()["prompt_eval_count"] >= PROJECTOR_IMAGE_TOKENS


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims this size (its pixel data is missing)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


@pytest.mark.parametrize("image,message", [
    ("not base64!", "images[0]: illegal base64 data"),
    (b64(b"GIF89a is what this pretends to be"), "images[0]: invalid image data"),
    (b64(png_claiming(100_000, 100_000)), "larger than the 33 megapixels allowed"),
    (b64(b"BM" + bytes(60)), "images[0]: invalid image data"),
], ids=["bad base64", "not an image", "too many pixels", "a broken bitmap"])
def test_a_bad_image_is_a_400_and_the_server_stays_healthy(server: Server, vision: str,
                                                           image: str, message: str) -> None:
    reply = server.post("/api/generate", {"model": vision, "prompt": ASK, "images": [image]})
    assert reply.status == 400 and message in reply.json()["error"], reply.body
    assert generate(server, vision)["response"]


def test_an_image_whose_pixels_do_not_decode_is_a_400(server: Server, vision: str) -> None:
    reply = server.post("/api/generate", {"model": vision, "prompt": ASK, "stream": False,
                                          "images": [b64(png_claiming(32, 32))]})
    assert reply.status == 400 and "invalid image data" in reply.json()["error"], reply.body
    assert generate(server, vision)["response"]


def test_a_prompt_with_images_past_the_context_is_a_400_since_an_image_is_never_cut(
        server: Server, vision: str) -> None:
    # A vision model's context is 2048 at least, as Ollama makes it: 64 asks for less.
    reply = server.post("/api/generate", {"model": vision, "prompt": ASK + " word" * 2100,
                                          "stream": False, "options": {"num_ctx": 64},
                                          "images": [b64(png(seed=i)) for i in range(2)]})
    assert reply.status == 400
    assert "exceeds the context length" in reply.json()["error"], reply.body
    assert generate(server, vision)["response"]


def test_a_text_only_model_refuses_images(server: Server) -> None:
    reply = server.post("/api/generate", {"model": MODEL, "prompt": ASK, "images": [b64(png())]})
    assert reply.status == 400
    assert reply.json() == {"error": f'"{MODEL}" does not support images'}


def test_a_history_is_cut_counting_each_image_as_ollamas_768_positions(
        server: Server, vision: str) -> None:
    # Three images' own positions (16 each here) would fit in 2048 (a vision model's least
    # context, as Ollama's); counted as Ollama counts an image, the oldest message goes, and
    # the answer still comes.
    history = [{"role": "user", "content": ASK, "images": [b64(png(seed=1))]},
               {"role": "assistant", "content": "A small square."},
               {"role": "user", "content": ASK, "images": [b64(png(seed=2))]},
               {"role": "assistant", "content": "Another square."},
               {"role": "user", "content": "What colour is this one?",
                "images": [b64(png(seed=3))]}]

    def prompt_size(num_ctx: int) -> int:
        reply = server.post("/api/chat", {"model": vision, "messages": history, "stream": False,
                                          "options": {**GREEDY, "num_ctx": num_ctx}})
        assert reply.status == 200, reply.body
        return reply.json()["prompt_eval_count"]

    whole = prompt_size(8192)
    assert whole > 3 * PROJECTOR_IMAGE_TOKENS
    assert prompt_size(512) < whole - PROJECTOR_IMAGE_TOKENS

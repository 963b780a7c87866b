"""POST /api/generate against the real server and model."""

from __future__ import annotations

from typing import Callable

from tests.e2e.conftest import MODEL, QUICK
from tests.e2e.server import Server

PROMPT = "Why is the sky blue?"


def generate(server: Server, **body) -> list[dict]:
    reply = server.post("/api/generate", {"model": MODEL, "prompt": PROMPT, **body})
    assert reply.status == 200, reply.body
    return reply.lines()


def text_of(lines: list[dict]) -> str:
    return "".join(line["response"] for line in lines)


def test_streams_ndjson_lines_ending_with_stats(server: Server) -> None:
    reply = server.post("/api/generate", {"model": MODEL, "prompt": PROMPT, "options": QUICK})
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/x-ndjson")
    lines = reply.lines()
    assert all(line["done"] is False and line["model"] == MODEL for line in lines[:-1])
    final = lines[-1]
    assert final["done"] is True and final["response"] == ""
    assert final["done_reason"] == "length"
    for key in ("total_duration", "load_duration", "prompt_eval_count", "prompt_eval_duration",
                "eval_count", "eval_duration"):
        assert isinstance(final[key], int) and final[key] >= 0, key
    assert final["eval_count"] == 8
    assert final["prompt_eval_count"] > 5
    assert final["total_duration"] >= final["eval_duration"] > 0
    assert text_of(lines[:-1]).strip()


def test_non_streaming_returns_one_object_with_the_whole_text(server: Server) -> None:
    streamed = text_of(generate(server, options=QUICK))
    reply = server.post("/api/generate", {"model": MODEL, "prompt": PROMPT, "stream": False,
                                          "options": QUICK})
    assert reply.status == 200
    body = reply.json()
    assert body["done"] is True and body["response"] == streamed
    assert body["eval_count"] == 8


def test_num_predict_is_exact(server: Server) -> None:
    final = generate(server, options={"num_predict": 13, "temperature": 0})[-1]
    assert final["eval_count"] == 13 and final["done_reason"] == "length"


def test_seed_with_temperature_is_reproducible(server: Server) -> None:
    opts = {"num_predict": 16, "temperature": 1.0, "seed": 1234}
    first = text_of(generate(server, options=opts))
    assert text_of(generate(server, options=opts)) == first
    others = {text_of(generate(server, options={**opts, "seed": s})) for s in (1, 2, 3)}
    assert others != {first}  # the seed really drives the draw


def test_stop_string_ends_generation_without_leaking(server: Server) -> None:
    full = text_of(generate(server, options={"num_predict": 24, "temperature": 0}))
    # A 3-character stop from the second half of the reply, not blank (blank stops are odd).
    stop = next(full[i:i + 3] for i in range(len(full) // 2, len(full) - 2) if full[i:i + 3].strip())
    expected = full[: full.index(stop)]
    lines = generate(server, options={"num_predict": 24, "temperature": 0, "stop": [stop]})
    assert text_of(lines) == expected
    assert lines[-1]["done_reason"] == "stop"


def test_context_from_a_reply_continues_the_conversation(server: Server) -> None:
    first = generate(server, options=QUICK)[-1]
    context = first["context"]
    assert isinstance(context, list)
    assert len(context) == first["prompt_eval_count"] + first["eval_count"]
    follow = generate(server, prompt="And why is grass green?", context=context,
                      options=QUICK)[-1]
    assert follow["prompt_eval_count"] > len(context)
    assert follow["context"][: len(context)] == context


def test_raw_prompt_is_not_templated(server: Server) -> None:
    templated = generate(server, options=QUICK)[-1]["prompt_eval_count"]
    raw = generate(server, raw=True, options=QUICK)[-1]
    assert raw["prompt_eval_count"] < templated  # no <start_of_turn> wrapping
    assert "context" not in raw  # as Ollama: a raw prompt gives no context to continue


def test_raw_with_a_system_template_or_context_is_a_400_in_ollamas_words(server: Server) -> None:
    for extra in ({"system": "Be brief."}, {"template": "{{ .Prompt }}"}, {"context": [1, 2]}):
        reply = server.post("/api/generate", {"model": MODEL, "prompt": PROMPT, "raw": True,
                                              **extra})
        assert reply.status == 400
        assert reply.json() == {"error": "raw mode does not support template, system, or context"}


def test_system_and_template_overrides_reach_the_prompt(server: Server) -> None:
    plain = generate(server, options=QUICK)[-1]["prompt_eval_count"]
    with_system = generate(server, system="You answer in one word.", options=QUICK)[-1]
    assert with_system["prompt_eval_count"] > plain
    custom = generate(server, template="{{ .Prompt }}", options=QUICK)[-1]
    assert custom["prompt_eval_count"] < plain


def test_prompt_longer_than_num_ctx_is_truncated_not_refused(server: Server) -> None:
    long_prompt = "tell me a story about a blue sky " * 40
    final = generate(server, prompt=long_prompt, options={"num_ctx": 64, "num_predict": 4,
                                                          "temperature": 0})[-1]
    assert final["done"] is True
    assert final["prompt_eval_count"] <= 63


def test_empty_prompt_loads_and_keep_alive_zero_unloads(server: Server) -> None:
    loaded = server.post("/api/generate", {"model": MODEL})
    assert loaded.status == 200
    assert loaded.json()["done_reason"] == "load" and loaded.json()["response"] == ""
    assert MODEL in [m["name"] for m in server.get("/api/ps").json()["models"]]
    unloaded = server.post("/api/generate", {"model": MODEL, "keep_alive": 0})
    assert unloaded.json()["done_reason"] == "unload"
    assert server.get("/api/ps").json()["models"] == []


def test_utf8_characters_are_never_split(server: Server) -> None:
    lines = generate(server, prompt="Write three emoji and the word café in Japanese.",
                     options={"num_predict": 40, "temperature": 0})
    for line in lines:
        assert "\ufffd" not in line["response"]


def test_num_ctx_is_capped_at_the_trained_context_length(make_server: Callable[..., Server]) -> None:
    server = make_server(OLLAMA_NUM_PARALLEL="1")  # one slot keeps the 32k-token KV cache small
    generate(server, options={"num_ctx": 1_000_000, "num_predict": 1, "temperature": 0})
    [entry] = [m for m in server.get("/api/ps").json()["models"] if m["name"] == MODEL]
    assert entry["context_length"] == 32768


def test_prompt_larger_than_a_pipe_buffer_is_accepted(server: Server) -> None:
    huge = "The sky is blue because of Rayleigh scattering. " * 6000  # ~300 KB
    final = generate(server, prompt=huge, options={"num_ctx": 256, "num_predict": 2,
                                                   "temperature": 0})[-1]
    assert final["done"] is True and final["prompt_eval_count"] <= 255


def test_prompt_longer_than_one_batch_is_prefilled_in_chunks(server: Server) -> None:
    long_prompt = "Count the words in this sentence please. " * 150  # ~1200 tokens > 512 per step
    final = generate(server, prompt=long_prompt, options=QUICK)[-1]
    assert final["done"] is True and final["eval_count"] == 8
    assert final["prompt_eval_count"] > 1000

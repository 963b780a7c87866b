"""GET /metrics on the real server and model: generations move the token counters and timing
histograms, and a client that goes away mid-stream frees its slot and counts as 499."""

from __future__ import annotations

from tests.e2e.conftest import MODEL, QUICK
from tests.e2e.server import Server
from tests.e2e.test_serving import LONG, open_stream, wait_until
from tests.prometheus import sample_value


def metric(server: Server, name: str, **labels: str) -> float:
    """A sample of the server's metrics now (0 for a label set not seen yet)."""
    reply = server.get("/metrics")
    assert reply.status == 200
    return sample_value(reply.body.decode(), name, **labels) or 0.0


def test_a_generation_moves_the_token_counters_and_the_timing_histograms(server: Server) -> None:
    names = ("corral_prompt_tokens_total", "corral_generated_tokens_total",
             "corral_time_to_first_token_seconds_count", "corral_inter_token_latency_seconds_count")
    before = {name: metric(server, name, model=MODEL) for name in names}
    [*_, done] = server.post("/api/generate", {"model": MODEL, "prompt": "Why is the sky blue?",
                                               "options": QUICK}).lines()
    after = {name: metric(server, name, model=MODEL) for name in names}
    assert after["corral_prompt_tokens_total"] - before["corral_prompt_tokens_total"] == \
        done["prompt_eval_count"]
    assert after["corral_generated_tokens_total"] - before["corral_generated_tokens_total"] == \
        done["eval_count"] == 8
    assert after["corral_time_to_first_token_seconds_count"] == \
        before["corral_time_to_first_token_seconds_count"] + 1
    assert after["corral_inter_token_latency_seconds_count"] > \
        before["corral_inter_token_latency_seconds_count"]


def test_a_v1_chat_completion_counts_its_tokens_under_the_models_name(server: Server) -> None:
    before = metric(server, "corral_generated_tokens_total", model=MODEL)
    reply = server.post("/v1/chat/completions", {
        "model": MODEL, "max_tokens": 8, "temperature": 0,
        "messages": [{"role": "user", "content": "Say hello."}]}).json()
    after = metric(server, "corral_generated_tokens_total", model=MODEL)
    assert after - before == reply["usage"]["completion_tokens"] > 0


def test_a_client_gone_mid_stream_leaves_no_request_running_within_2s(server: Server) -> None:
    conn, _ = open_stream(server, LONG)
    assert metric(server, "corral_requests_running") >= 1
    conn.close()
    assert wait_until(lambda: metric(server, "corral_requests_running") == 0, timeout=2)


def test_a_client_gone_mid_stream_counts_as_499(server: Server) -> None:
    gone = {"endpoint": "/api/generate", "status": "499"}
    before = metric(server, "corral_requests_total", **gone)
    conn, _ = open_stream(server, LONG)
    conn.close()
    assert wait_until(lambda: metric(server, "corral_requests_total", **gone) == before + 1,
                      timeout=10)

"""The second probe as a hostile client would run it: schemas, templates, stop strings and
bodies that crashed a worker, wedged the front end or exhausted memory.

Each test is one item of that issue, sent to the real server with the real model; each asserts
the clear answer now given and that the server goes on serving.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import psutil
import pytest

from tests.e2e.conftest import MODEL, QUICK
from tests.e2e.server import ROOT, Server
from tests.e2e.test_hostile import quick_generate, worker_process

DOUBLING = '{{$x := "aaaaaaaa"}}{{range 27}}{{$x = print $x $x}}{{end}}{{len $x}}{{ .Prompt }}'
# A template that marks out thinking, so that `think: true` is accepted.
THINKING = ("{{ range .Messages }}{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}"
            "{{ .Content }}{{ end }}")
SLOW = "{{range 600000}}{{end}}{{ .Prompt }}"  # ~2 s of CPU: within the render budget


def front_end(srv: Server) -> psutil.Process:
    assert srv.process is not None
    return psutil.Process(srv.process.pid)


def grows_worker_by(srv: Server, **body: object) -> tuple[dict, int]:
    """A generation's reply, and how much the worker's RSS grew while it was served."""
    quick_generate(srv)
    worker = worker_process(srv)
    before = worker.memory_info().rss
    reply = generate(srv, **body)
    return reply, worker.memory_info().rss - before


def generate(srv: Server, **body: object) -> dict:
    reply = srv.post("/api/generate", {"model": MODEL, "prompt": "hi", "stream": False,
                                       "options": QUICK, **body})
    return {"status": reply.status, **reply.json()}


# ---- 1. a schema that crashed the worker ------------------------------------------------------

def test_a_long_max_length_is_served_without_crashing_the_worker(server: Server) -> None:
    quick_generate(server)
    pid = worker_process(server).pid
    reply = generate(server, format={"type": "string", "maxLength": 20000})
    assert reply["status"] == 200 and reply["response"].startswith("\"")
    assert worker_process(server).pid == pid  # was: SIGSEGV, every stream on it gone


def test_a_long_max_length_through_v1_json_schema_is_served(server: Server) -> None:
    reply = server.post("/v1/chat/completions", {
        "model": MODEL, "max_tokens": 8, "temperature": 0,
        "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_schema", "json_schema": {
            "name": "s", "schema": {"type": "string", "maxLength": 20000}}}})
    assert reply.status == 200, reply.body


# ---- 2. a schema that exhausted memory --------------------------------------------------------

@pytest.mark.parametrize("schema,keyword", [
    ({"type": "array", "items": {"type": "integer"}, "minItems": 100_000_000}, "minItems"),
    ({"type": "string", "minLength": 1_000_000_000}, "minLength"),
    ({"type": "string", "pattern": "^a{100000000}$"}, "100000000"),
])
def test_a_huge_count_in_a_schema_is_400_at_once_and_the_worker_stays_small(
        server: Server, schema: dict, keyword: str) -> None:
    reply, grown = grows_worker_by(server, format=schema)
    assert reply["status"] == 400 and keyword in reply["error"], reply  # was an empty reason
    assert grown < 64 << 20  # was 740 MB -> 3.2 GB


def test_thousands_of_property_names_that_escape_alike_are_converted(server: Server) -> None:
    schema = {"type": "object", "properties": {f"a.{i}": {"type": "integer"} for i in range(8000)}}
    # One token: the first is "{", which needs no pass of the grammar over the vocabulary.
    reply = generate(server, format=schema, options={"num_predict": 1, "temperature": 0})
    assert reply["status"] == 200 and reply["response"] == "{", reply  # naming took 17 s
    assert quick_generate(server)["done"] is True


# ---- 3. template memory bombs -----------------------------------------------------------------

@pytest.mark.parametrize("template,error", [
    (DOUBLING, "template values exceed"),
    ('{{ printf "%0100000000d" 0 }}', "printf width"),
    ('{{ printf "%*d" 100000000 0 }}', "printf width"),
])
def test_a_template_that_makes_a_huge_value_is_400_and_the_worker_stays_small(
        server: Server, template: str, error: str) -> None:
    reply, grown = grows_worker_by(server, template=template)
    assert reply["status"] == 400 and error in reply["error"]
    assert grown < 64 << 20  # was 2.7 GB
    assert quick_generate(server)["done"] is True


def test_a_chat_template_memory_bomb_never_grows_the_front_end(
        make_server: Callable[..., Server]) -> None:
    srv = make_server()
    created = srv.post("/api/create", {"model": "bomb:1", "from": MODEL, "stream": False,
                                       "template": THINKING + DOUBLING})
    assert created.status == 200, created.body
    try:
        before = front_end(srv).memory_info().rss
        reply = srv.post("/api/chat", {"model": "bomb:1", "think": True, "stream": False,
                                       "messages": [{"role": "user", "content": "hi"}]})
        assert reply.status == 400 and "template values exceed" in reply.json()["error"]
        # The front end never renders a prompt (it went to 2 GB rendering this one).
        assert front_end(srv).memory_info().rss - before < 32 << 20
    finally:
        srv.request("DELETE", "/api/delete", {"model": "bomb:1"})


# ---- 4. the front end wedged on renders -------------------------------------------------------

def test_slow_thinking_renders_leave_the_front_end_answering(
        make_server: Callable[..., Server]) -> None:
    srv = make_server()
    created = srv.post("/api/create", {"model": "slowthink:1", "from": MODEL, "stream": False,
                                       "template": THINKING + SLOW.replace(".Prompt", ".System")})
    assert created.status == 200, created.body
    chat = {"model": "slowthink:1", "think": True, "stream": False, "options": QUICK,
            "messages": [{"role": "user", "content": "hi"}]}
    try:
        with ThreadPoolExecutor(6) as pool:
            slow = [pool.submit(srv.post, "/api/chat", chat) for _ in range(6)]
            time.sleep(1.0)
            # These went through the front end's threads that the renders once held.
            assert srv.get("/api/tags").status == 200
            assert srv.post("/api/show", {"model": MODEL}).status == 200
            assert quick_generate(srv)["done"] is True
            assert not all(f.done() for f in slow)
            assert all(f.result().status == 200 for f in slow)
    finally:
        srv.request("DELETE", "/api/delete", {"model": "slowthink:1"})


# ---- 9. renders in parallel, each charged its own time ---------------------------------------

def test_a_short_prompt_is_not_held_up_by_slow_templates(
        make_server: Callable[..., Server]) -> None:
    srv = make_server()
    quick_generate(srv)
    order: list[str] = []

    def run(name: str, **body: object) -> None:
        assert generate(srv, **body)["status"] == 200
        order.append(name)

    with ThreadPoolExecutor(13) as pool:
        slow = [pool.submit(run, "slow", template=SLOW) for _ in range(12)]
        time.sleep(0.5)
        pool.submit(run, "short").result()
        for future in slow:
            future.result()
    assert order[0] == "short"  # was: 19 s behind the twelve


# ---- 7. stop strings --------------------------------------------------------------------------

def test_a_stop_string_past_the_length_limit_is_400(server: Server) -> None:
    reply = generate(server, options={**QUICK, "stop": ["x" * 100_000]})
    assert reply["status"] == 400 and "at most 512 characters" in reply["error"]


def test_many_long_stops_the_output_keeps_almost_matching_still_stop_it(server: Server) -> None:
    # The greedy answer to this prompt is "1, 2, 3, ...": every stop begins like it.
    answer = generate(server, raw=True, prompt="1, 2, 3, 4, 5,",
                      options={"temperature": 0, "num_predict": 40})["response"]
    stops = [answer[:20] + "#" * 490 + str(i) for i in range(63)] + [answer[10:14]]
    reply = generate(server, raw=True, prompt="1, 2, 3, 4, 5,",
                     options={"temperature": 0, "num_predict": 40, "stop": stops})
    assert reply["status"] == 200 and reply["done_reason"] == "stop"
    assert reply["response"] == answer[:10]


# ---- 8. large bodies --------------------------------------------------------------------------

def test_a_huge_modelfile_is_parsed_while_other_requests_are_answered(server: Server) -> None:
    modelfile = f"FROM {MODEL}\n" + "MESSAGE user hello there\n" * 600_000  # 15 MB
    with ThreadPoolExecutor(1) as pool:
        create = pool.submit(server.post, "/api/create", {"model": "huge:1", "stream": False,
                                                          "modelfile": modelfile})
        time.sleep(0.3)  # its body is in and being parsed
        answered = 0
        while not create.done():
            assert server.get("/api/version").status == 200
            answered += 1
        reply = create.result()
    try:
        assert reply.status == 200, reply.body
        assert answered > 1  # was: every request frozen for 6 s
    finally:
        server.request("DELETE", "/api/delete", {"model": "huge:1"})


# ---- 11. embedding batches --------------------------------------------------------------------

def test_more_embedding_inputs_than_the_limit_are_400(server: Server) -> None:
    reply = server.post("/api/embed", {"model": MODEL, "input": ["a"] * 2049})
    assert reply.status == 400 and "at most 2048" in reply.json()["error"]


def test_a_later_embedding_takes_turns_with_a_large_batch(server: Server) -> None:
    server.post("/api/embed", {"model": MODEL, "input": "warm up"})
    done: list[str] = []

    def embed(name: str, inputs: list[str]) -> None:
        assert server.post("/api/embed", {"model": MODEL, "input": inputs}).status == 200
        done.append(name)

    with ThreadPoolExecutor(2) as pool:
        batch = pool.submit(embed, "batch", [f"sentence number {i}" for i in range(400)])
        time.sleep(1.0)
        pool.submit(embed, "single", ["one more"]).result()
        batch.result()
    assert done == ["single", "batch"]  # was: after the whole batch


# ---- 12. slow headers -------------------------------------------------------------------------

def test_a_connection_sending_its_headers_slowly_is_closed(
        make_server: Callable[..., Server]) -> None:
    srv = make_server(CORRAL_IDLE_TIMEOUT="2s")
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as sock:
        started = time.monotonic()
        closed = False
        for byte in b"GET /api/version HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 100:
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                closed = True
                break
            time.sleep(0.2)
        if not closed:
            closed = sock.recv(1024) == b""
    assert closed and time.monotonic() - started < 15  # was: open as long as it kept sending


# ---- 14. bad requests that answered 500 -------------------------------------------------------

@pytest.mark.parametrize("message", [
    {"role": "user", "content": [{"type": "text", "text": 5}]},
    {"role": "assistant", "content": "", "tool_calls": 5},
])
def test_a_malformed_v1_message_is_400(server: Server, message: dict) -> None:
    reply = server.post("/v1/chat/completions", {"model": MODEL, "messages": [message]})
    assert reply.status == 400 and "messages[0]" in reply.json()["error"]["message"]


def test_a_json_schema_response_format_that_is_not_an_object_is_400(server: Server) -> None:
    reply = server.post("/v1/chat/completions", {
        "model": MODEL, "messages": [{"role": "user", "content": "hi"}],
        "response_format": {"type": "json_schema", "json_schema": "x"}})
    assert reply.status == 400 and "json_schema" in reply.json()["error"]["message"]


def test_a_keep_alive_past_any_duration_is_400(server: Server) -> None:
    reply = server.post("/api/generate", {"model": MODEL, "prompt": "hi",
                                          "keep_alive": "1" + "0" * 400})
    assert reply.status == 400 and "keep_alive" in reply.json()["error"]


def test_an_ollama_keep_alive_past_any_duration_stops_start_with_one_line(
        store_dir: Path) -> None:
    env = {**os.environ, "OLLAMA_MODELS": str(store_dir), "OLLAMA_HOST": "127.0.0.1:1",
           "OLLAMA_KEEP_ALIVE": "1" + "0" * 400}
    done = subprocess.run([sys.executable, "-m", "server", "serve"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "OLLAMA_KEEP_ALIVE" in done.stderr


def test_a_null_max_completion_tokens_leaves_max_tokens_in_force(server: Server) -> None:
    reply = server.post("/v1/chat/completions", {
        "model": MODEL, "max_tokens": 4, "max_completion_tokens": None,
        "messages": [{"role": "user", "content": "Count to a thousand."}]}, timeout=120)
    assert reply.status == 200 and reply.json()["usage"]["completion_tokens"] <= 4


@pytest.mark.parametrize("load", [{"num_ctx": 1}, {"num_ctx": 3}, {"num_batch": 2**31 - 1}],
                         ids=str)
def test_load_options_llama_cpp_aborts_on_are_served_by_the_same_worker(
        server: Server, load: dict) -> None:
    """Each aborted the worker while loading, and the model was refused from then on."""
    pid = worker_process(server).pid
    reply = generate(server, options={**QUICK, **load})
    assert reply["status"] == 200 and reply["done"]
    assert worker_process(server).pid == pid


def test_a_context_under_four_cells_is_raised_to_four_as_ollama_does(server: Server) -> None:
    assert generate(server, options={**QUICK, "num_ctx": 1})["status"] == 200
    [running] = server.get("/api/ps").json()["models"]
    assert running["context_length"] == 4

"""The second probe as a hostile client would run it: schemas, templates, stop strings and
bodies that crashed a worker, wedged the front end or exhausted memory.

Each test is one item of that issue, sent to the real server with the real model; each asserts
the clear answer now given and that the server goes on serving.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import psutil
import pytest

from tests.e2e.conftest import MODEL, QUICK
from tests.e2e.server import Server
from tests.e2e.test_hostile import quick_generate, worker_process

DOUBLING = '{{$x := "aaaaaaaa"}}{{range 27}}{{$x = print $x $x}}{{end}}{{len $x}}{{ .Prompt }}'
# A template that marks out thinking, so that `think: true` is accepted.
THINKING = ("{{ range .Messages }}{{ if .Thinking }}<think>{{ .Thinking }}</think>{{ end }}"
            "{{ .Content }}{{ end }}")
SLOW = "{{range 600000}}{{end}}{{ .Prompt }}"  # ~2 s of CPU: within the render budget


def front_end(srv: Server) -> psutil.Process:
    assert srv.process is not None
    return psutil.Process(srv.process.pid)


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
    quick_generate(server)
    worker = worker_process(server)
    before = worker.memory_info().rss
    reply = generate(server, format=schema)
    assert reply["status"] == 400 and keyword in reply["error"], reply  # was an empty reason
    assert worker.memory_info().rss - before < 64 << 20  # was 740 MB -> 3.2 GB


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
    quick_generate(server)
    worker = worker_process(server)
    before = worker.memory_info().rss
    reply = generate(server, template=template)
    assert reply["status"] == 400 and error in reply["error"]
    assert worker.memory_info().rss - before < 64 << 20  # was 2.7 GB
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

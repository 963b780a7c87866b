"""A web page cannot drive the server, DNS rebinding is refused, and API keys lock it down."""

from __future__ import annotations

import http.client
import re
import signal
import time
from pathlib import Path
from typing import Callable

import ollama
import pytest

from tests.e2e.conftest import MODEL
from tests.e2e.server import Reply, Server


def call(srv: Server, method: str, path: str, headers: dict[str, str], body: bytes = b"") -> Reply:
    """One request with exactly these headers (Server.request sends none of its own)."""
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
    try:
        conn.request(method, path, body=body or None, headers=headers)
        resp = conn.getresponse()
        return Reply(resp.status, dict(resp.getheaders()), resp.read())
    finally:
        conn.close()


def model_names(srv: Server, headers: dict[str, str] | None = None) -> list[str]:
    reply = call(srv, "GET", "/api/tags", headers or {})
    assert reply.status == 200
    return [m["name"] for m in reply.json()["models"]]


def test_cross_site_simple_post_is_refused_and_changes_nothing(server: Server) -> None:
    # A form-like POST: browsers send it without a preflight, so the server must refuse it.
    reply = call(server, "POST", "/api/copy",
                 {"Origin": "http://evil.example", "Content-Type": "text/plain"},
                 b'{"source": "gemma3:270m", "destination": "stolen:v1"}')
    assert reply.status == 403 and reply.json() == {"error": "origin not allowed"}
    assert "stolen:v1" not in model_names(server)


def test_local_page_gets_cors_headers(server: Server) -> None:
    origin = "http://localhost:3000"
    reply = call(server, "OPTIONS", "/api/chat",
                 {"Origin": origin, "Access-Control-Request-Method": "POST"})
    assert reply.status == 204 and reply.headers["Access-Control-Allow-Origin"] == origin
    reply = call(server, "GET", "/api/tags", {"Origin": origin})
    assert reply.status == 200 and reply.headers["Access-Control-Allow-Origin"] == origin


def test_foreign_host_header_is_refused(server: Server) -> None:
    reply = call(server, "GET", "/api/tags", {"Host": "evil.example"})
    assert reply.status == 403 and reply.json() == {"error": "host not allowed"}


def test_api_key_is_required_and_the_ollama_client_can_send_it(
        make_server: Callable[..., Server]) -> None:
    srv = make_server(CORRAL_API_KEY="s3cret")
    assert call(srv, "GET", "/api/tags", {}).status == 401
    assert MODEL in model_names(srv, {"Authorization": "Bearer s3cret"})
    with pytest.raises(ollama.ResponseError) as info:
        ollama.Client(host=f"http://{srv.base}").list()
    assert info.value.status_code == 401
    client = ollama.Client(host=f"http://{srv.base}", headers={"Authorization": "Bearer s3cret"})
    assert MODEL in [m.model for m in client.list().models]


def test_sighup_reloads_the_key_file(make_server: Callable[..., Server], tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("old\n")
    srv = make_server(CORRAL_API_KEY_FILE=str(keys))
    keys.write_text("new\n")
    assert srv.process is not None
    srv.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while call(srv, "GET", "/api/tags", {"Authorization": "Bearer new"}).status != 200:
        assert time.monotonic() < deadline, srv.log()
        time.sleep(0.1)
    assert call(srv, "GET", "/api/tags", {"Authorization": "Bearer old"}).status == 401


def test_unreadable_key_file_stops_the_start(make_server: Callable[..., Server],
                                             tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(RuntimeError, match=re.escape(f"CORRAL_API_KEY_FILE='{missing}' cannot")):
        make_server(CORRAL_API_KEY_FILE=str(missing))

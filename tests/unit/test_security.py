"""Origin (CORS), Host and API key checks, on a tiny app with the real middlewares."""

from __future__ import annotations

from pathlib import Path
from typing import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from server.security import API_KEYS, install, middlewares
from server.settings import SettingsError, load

Client = Callable[..., Awaitable[TestClient]]
LOCAL = {"Host": "127.0.0.1:11434"}
RAN = web.AppKey("ran", list)  # handlers that ran


def make_app(env: dict[str, str] | None = None) -> web.Application:
    """GET /, GET /api/tags, a recording POST /api/copy and a streamed POST /api/chat."""
    settings = load(env or {})
    app = web.Application(middlewares=middlewares(settings))
    install(app, settings)
    app[RAN] = []

    async def root(request: web.Request) -> web.Response:
        return web.Response(text="Ollama is running")

    async def tags(request: web.Request) -> web.Response:
        return web.json_response({"models": []})

    async def copy(request: web.Request) -> web.Response:
        request.app[RAN].append("copy")
        return web.Response()

    async def chat(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        await response.write(b'{"done": true}\n')
        return response

    app.router.add_get("/", root)
    app.router.add_get("/api/tags", tags)
    app.router.add_get("/v1/models", tags)
    app.router.add_post("/api/copy", copy)
    app.router.add_post("/api/chat", chat)
    return app


async def serve(aiohttp_client: Client, **env: str) -> TestClient:
    return await aiohttp_client(make_app(env))


def preflight(origin: str) -> dict[str, str]:
    return {**LOCAL, "Origin": origin, "Access-Control-Request-Method": "POST"}


# --- origins -----------------------------------------------------------------------------------

@pytest.mark.parametrize("origin", [
    "http://localhost", "http://localhost:3000", "https://127.0.0.1:8443", "http://0.0.0.0:80",
    "app://x", "file://", "tauri://localhost", "vscode-webview://abc", "chrome-extension://abc",
])
async def test_default_origins_are_allowed(aiohttp_client: Client, origin: str) -> None:
    client = await serve(aiohttp_client)
    resp = await client.get("/api/tags", headers={**LOCAL, "Origin": origin})
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == origin
    assert resp.headers["Vary"] == "Origin"


async def test_other_site_is_refused_before_the_handler_runs(aiohttp_client: Client) -> None:
    client = await serve(aiohttp_client)
    evil = "http://evil.example"
    resp = await client.options("/api/copy", headers=preflight(evil))
    assert resp.status == 403 and await resp.json() == {"error": "origin not allowed"}
    resp = await client.post("/api/copy", data=b'{"source": "a", "destination": "b"}',
                             headers={**LOCAL, "Origin": evil, "Content-Type": "text/plain"})
    assert resp.status == 403 and await resp.json() == {"error": "origin not allowed"}
    assert "Access-Control-Allow-Origin" not in resp.headers
    assert client.app[RAN] == []


async def test_ollama_origins_adds_exact_and_wildcard_origins(aiohttp_client: Client) -> None:
    client = await serve(aiohttp_client,
                         OLLAMA_ORIGINS="https://app.example.com, https://*.corp.example")
    for origin in ("https://app.example.com", "https://ui.corp.example", "http://localhost:5173"):
        resp = await client.get("/api/tags", headers={**LOCAL, "Origin": origin})
        assert resp.status == 200, origin
    resp = await client.get("/api/tags", headers={**LOCAL, "Origin": "https://corp.example.evil"})
    assert resp.status == 403


async def test_star_allows_every_origin(aiohttp_client: Client) -> None:
    client = await serve(aiohttp_client, OLLAMA_ORIGINS="*")
    resp = await client.get("/api/tags", headers={**LOCAL, "Origin": "http://evil.example"})
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == "http://evil.example"


async def test_same_origin_and_no_origin_pass_without_cors_headers(aiohttp_client: Client) -> None:
    client = await serve(aiohttp_client)
    for headers in (LOCAL, {**LOCAL, "Origin": "http://127.0.0.1:11434"}):
        resp = await client.get("/api/tags", headers=headers)
        assert resp.status == 200 and "Access-Control-Allow-Origin" not in resp.headers


async def test_preflight_is_204_with_cors_headers_on_any_path(aiohttp_client: Client) -> None:
    client = await serve(aiohttp_client)
    resp = await client.options("/api/anything", headers=preflight("http://localhost:3000"))
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert resp.headers["Access-Control-Allow-Methods"] == \
        "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS"
    allowed = resp.headers["Access-Control-Allow-Headers"].split(", ")
    assert {"Authorization", "Content-Type", "OpenAI-Beta", "x-stainless-timeout"} <= set(allowed)
    assert resp.headers["Access-Control-Max-Age"] == "43200"
    assert resp.headers["Vary"] == "Origin"


async def test_streamed_response_carries_allow_origin(aiohttp_client: Client) -> None:
    client = await serve(aiohttp_client)
    resp = await client.post("/api/chat", headers={**LOCAL, "Origin": "http://localhost:3000"})
    assert resp.status == 200 and await resp.read() == b'{"done": true}\n'
    assert resp.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"


# --- Host names --------------------------------------------------------------------------------

async def test_foreign_host_is_refused_on_loopback(aiohttp_client: Client) -> None:
    client = await serve(aiohttp_client, OLLAMA_HOST="127.0.0.1:11434")
    resp = await client.get("/api/tags", headers={"Host": "evil.example"})
    assert resp.status == 403 and await resp.json() == {"error": "host not allowed"}


@pytest.mark.parametrize("host", ["localhost:11434", "127.0.0.1", "[::1]:11434",
                                  "foo.localhost", "NAS.local:80", "10.0.0.5:11434", ""])
async def test_local_hosts_are_accepted_on_loopback(aiohttp_client: Client, host: str) -> None:
    client = await serve(aiohttp_client, OLLAMA_HOST="localhost")
    resp = await client.get("/api/tags", headers={"Host": host})
    assert resp.status == 200


async def test_any_host_is_accepted_when_bound_to_all_interfaces(aiohttp_client: Client) -> None:
    client = await serve(aiohttp_client, OLLAMA_HOST="0.0.0.0")
    resp = await client.get("/api/tags", headers={"Host": "evil.example"})
    assert resp.status == 200


# --- API keys ----------------------------------------------------------------------------------

def bearer(key: str) -> dict[str, str]:
    return {**LOCAL, "Authorization": f"Bearer {key}"}


async def test_api_key_is_required_when_set(aiohttp_client: Client) -> None:
    client = await serve(aiohttp_client, CORRAL_API_KEY="s3cret")
    resp = await client.get("/api/tags", headers=LOCAL)
    assert resp.status == 401 and await resp.json() == {"error": "unauthorized"}
    assert resp.headers["WWW-Authenticate"] == "Bearer"
    assert (await client.get("/api/tags", headers=bearer("wrong"))).status == 401
    assert (await client.get("/api/tags", headers=bearer("s3cret"))).status == 200


async def test_root_stays_open_without_key(aiohttp_client: Client) -> None:
    client = await serve(aiohttp_client, CORRAL_API_KEY="s3cret")
    assert (await client.get("/", headers=LOCAL)).status == 200
    assert (await client.head("/", headers=LOCAL)).status == 200


async def test_preflight_needs_no_key(aiohttp_client: Client) -> None:
    client = await serve(aiohttp_client, CORRAL_API_KEY="s3cret")
    resp = await client.options("/api/chat", headers=preflight("http://localhost:3000"))
    assert resp.status == 204


async def test_every_key_in_the_key_file_works(aiohttp_client: Client, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("# team keys\nfirst\n\n  second  \n")
    client = await serve(aiohttp_client, CORRAL_API_KEY_FILE=str(keys))
    for key in ("first", "second"):
        assert (await client.get("/api/tags", headers=bearer(key))).status == 200
    assert (await client.get("/api/tags", headers=bearer("# team keys"))).status == 401


async def test_reload_reads_the_rewritten_key_file(aiohttp_client: Client, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("old\n")
    client = await serve(aiohttp_client, CORRAL_API_KEY_FILE=str(keys))
    keys.write_text("new\n")
    client.app[API_KEYS].reload()
    assert (await client.get("/api/tags", headers=bearer("old"))).status == 401
    assert (await client.get("/api/tags", headers=bearer("new"))).status == 200


async def test_unreadable_key_file_on_reload_keeps_the_old_keys(
        aiohttp_client: Client, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    keys = tmp_path / "keys"
    keys.write_text("old\n")
    client = await serve(aiohttp_client, CORRAL_API_KEY_FILE=str(keys))
    keys.unlink()
    client.app[API_KEYS].reload()
    assert str(keys) in caplog.text
    assert (await client.get("/api/tags", headers=bearer("old"))).status == 200


def test_unreadable_key_file_at_start_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing"
    with pytest.raises(SettingsError, match=str(missing)):
        make_app({"CORRAL_API_KEY_FILE": str(missing)})


async def test_v1_refusal_has_openai_error_shape(aiohttp_client: Client) -> None:
    client = await serve(aiohttp_client, CORRAL_API_KEY="s3cret")
    resp = await client.get("/v1/models", headers=LOCAL)
    assert resp.status == 401
    assert await resp.json() == {"error": {"message": "unauthorized", "type": "invalid_request_error",
                              "param": None, "code": "invalid_api_key"}}

"""/api/pull from a hostile registry (issue 16): a fake one on loopback serves malformed manifests
and config blobs, bodies past every cap, a blob the disk cannot hold, a blob cut off halfway,
and challenges naming token realms elsewhere. What must hold: the pull fails with a clear error,
nothing is written that should not be, the listings and delete keep working, the front end's
memory stays bounded and the credentials stay with the registry they are for."""

from __future__ import annotations

import base64
import hashlib
import shutil
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Iterator

import orjson
import psutil
import pytest

from store.registry import MAX_TOKEN_REPLY_BYTES
from store.store import (BLOB_MODE, CONFIG_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, MAX_MANIFEST_BYTES,
                         MODEL_MEDIA)
from tests.e2e.server import Server

Route = Callable[[BaseHTTPRequestHandler], None]  # writes the whole answer to one request
USER, PASSWORD = "corral", "s3cret"
CONFIG = b'{"model_format": "gguf", "model_family": "gemma3"}'
WEIGHTS = b"GGUF" + bytes(range(256)) * (32 << 10)  # 8 MiB: one range request


def reply(status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> Route:
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for key, value in {**(headers or {}), "Content-Length": str(len(body))}.items():
            handler.send_header(key, value)
        handler.end_headers()
        handler.wfile.write(body)
    return route


def streamed(total: int) -> Route:
    """`total` bytes with no length declared (the end is the connection's), as fast as the client
    takes them; a client that hangs up early ends it."""
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.end_headers()
        block = b" " * (1 << 20)
        try:
            for _ in range(total // len(block)):
                handler.wfile.write(block)
        except OSError:
            pass
    return route


def cut_off(data: bytes) -> Route:
    """Declares all of `data`, sends half, hangs up."""
    def route(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data[:len(data) // 2])
    return route


def challenged(realm: str, token: str, route: Route) -> Route:
    """The route for a request bearing the token; a 401 naming the realm for any other."""
    def gate(handler: BaseHTTPRequestHandler) -> None:
        if handler.headers.get("Authorization") == f"Bearer {token}":
            return route(handler)
        reply(401, headers={"WWW-Authenticate": f'Bearer realm="{realm}",service="fake"'})(handler)
    return gate


class FakeRegistry:
    """An HTTP server on a loopback address that answers each path as its route says (404 for
    others) and notes every request's path and Authorization header."""

    def __init__(self, host: str) -> None:
        self.routes: dict[str, Route] = {}
        self.seen: list[tuple[str, str | None]] = []
        registry = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                path = self.path.split("?", 1)[0]
                registry.seen.append((path, self.headers.get("Authorization")))
                registry.routes.get(path, reply(404))(self)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer((host, 0), Handler)
        self._server.daemon_threads = True
        self.address = f"{host}:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def publish(self, repository: str, manifest: Route,
                blobs: dict[str, Route] | None = None) -> str:
        """Serves a manifest, and blobs by digest, as `repository:v1`; returns the name to pull."""
        self.routes[f"/v2/{repository}/manifests/v1"] = manifest
        for digest, route in (blobs or {}).items():
            self.routes[f"/v2/{repository}/blobs/{digest}"] = route
        return f"{self.address}/{repository}:v1"

    def requested(self, repository: str) -> list[str]:
        return [path for path, _ in self.seen if path.startswith(f"/v2/{repository}/")]

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def digest(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


def entry(data: bytes, media_type: str) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest(data), "size": len(data)}


def manifest(config: Any, *layers: Any) -> bytes:
    return orjson.dumps({"schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE,
                         "config": config, "layers": list(layers)})


@pytest.fixture(scope="module")
def registry() -> Iterator[FakeRegistry]:
    fake = FakeRegistry("127.0.0.1")
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def elsewhere() -> Iterator[FakeRegistry]:
    """Another host (127.0.0.2 is loopback too), for realms that point away from the registry."""
    fake = FakeRegistry("127.0.0.2")
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def corral(registry: FakeRegistry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server over an empty store of its own, holding credentials for the fake registry."""
    models = tmp_path_factory.mktemp("hostile") / "models"
    models.mkdir()
    server = Server(models, env={"CORRAL_REGISTRY_AUTH": f"{registry.address}={USER}:{PASSWORD}"})
    yield server.start()
    server.stop()


def pull(corral: Server, name: str) -> tuple[int, str]:
    """The status and error of a pull that is to fail."""
    answer = corral.post("/api/pull", {"model": name, "insecure": True, "stream": False})
    return answer.status, answer.json().get("error", "")


def leftovers(corral: Server) -> list[str]:
    """What unfinished transfers left in blobs/."""
    return sorted(p.name for p in (corral.models_dir / "blobs").iterdir() if p.name[0] == ".")


def manifest_file(corral: Server, name: str) -> Path:
    host, namespace, rest = name.split("/")
    model, tag = rest.split(":")
    return corral.models_dir / "manifests" / host / namespace / model / tag


def assert_the_store_still_serves(corral: Server) -> None:
    assert corral.get("/api/tags").status == 200
    assert corral.get("/v1/models").status == 200


MALFORMED = {
    "config a number (issue 16)": manifest(0),
    "no config": orjson.dumps({"schemaVersion": 2, "layers": []}),
    "a negative size": manifest(entry(CONFIG, CONFIG_MEDIA_TYPE),
                                {**entry(WEIGHTS, MODEL_MEDIA), "size": -1}),
    "a digest that is a path": manifest(entry(CONFIG, CONFIG_MEDIA_TYPE),
                                        {**entry(WEIGHTS, MODEL_MEDIA), "digest": "../../x"}),
}


@pytest.mark.parametrize("body", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_manifest_fails_the_pull_and_writes_nothing(
        corral: Server, registry: FakeRegistry, body: bytes) -> None:
    name = registry.publish(f"malformed/{digest(body)[7:19]}", reply(200, body))
    status, error = pull(corral, name)
    assert status == 502 and "malformed manifest" in error
    assert not manifest_file(corral, name).exists() and leftovers(corral) == []
    assert_the_store_still_serves(corral)


def test_a_config_blob_that_is_not_a_json_object_fails_the_pull_and_is_not_kept(
        corral: Server, registry: FakeRegistry) -> None:
    config = b"[1, 2]"
    name = registry.publish("badconfig/model", reply(200, manifest(
        entry(config, CONFIG_MEDIA_TYPE), entry(WEIGHTS, MODEL_MEDIA))),
        {digest(config): reply(200, config), digest(WEIGHTS): reply(200, WEIGHTS)})
    status, error = pull(corral, name)
    assert status == 502 and "malformed model config: not a JSON object" in error
    assert not manifest_file(corral, name).exists() and leftovers(corral) == []
    assert not (corral.models_dir / "blobs" / digest(config).replace(":", "-")).exists()
    assert_the_store_still_serves(corral)


def test_damaged_manifests_in_the_store_leave_the_listings_working_and_are_deletable(
        corral: Server) -> None:
    not_an_object = b'"a string"'
    (corral.models_dir / "blobs" / digest(not_an_object).replace(":", "-")).write_bytes(
        not_an_object)
    damaged = {"issue16": MALFORMED["config a number (issue 16)"],
               "noconfig": MALFORMED["no config"],
               "stringconfig": manifest(entry(not_an_object, CONFIG_MEDIA_TYPE)),
               "huge": b" " * (MAX_MANIFEST_BYTES + 1)}
    for model, body in damaged.items():
        path = manifest_file(corral, f"by.hand/library/{model}:latest")
        path.parent.mkdir(parents=True)
        path.write_bytes(body)
    tags = corral.get("/api/tags")
    assert tags.status == 200 and not any("by.hand" in m["name"] for m in tags.json()["models"])
    openai = corral.get("/v1/models")
    assert openai.status == 200 and not any("by.hand" in m["id"] for m in openai.json()["data"])
    for model in damaged:
        answer = corral.request("DELETE", "/api/delete", {"model": f"by.hand/library/{model}"})
        assert answer.status == 200
    assert not (corral.models_dir / "manifests" / "by.hand").exists()


class PeakMemory:
    """The most memory (RSS) a process held above its start, sampled while the block runs."""

    def __init__(self, pid: int) -> None:
        self._process = psutil.Process(pid)
        self._stop = threading.Event()
        self.growth = 0

    def __enter__(self) -> "PeakMemory":
        start = self._process.memory_info().rss

        def sample() -> None:
            while not self._stop.wait(0.002):
                self.growth = max(self.growth, self._process.memory_info().rss - start)

        self._sampler = threading.Thread(target=sample)
        self._sampler.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._sampler.join()


def test_a_manifest_past_the_cap_is_refused_after_reading_no_more_than_the_cap(
        corral: Server, registry: FakeRegistry) -> None:
    name = registry.publish("huge/manifest", streamed(64 << 20))  # 16 times the cap
    assert corral.process is not None
    with PeakMemory(corral.process.pid) as memory:
        status, error = pull(corral, name)
    assert memory.growth < 24 << 20  # the cap and read buffers; the whole body would be 64 MiB
    assert status == 502 and f"manifest is larger than {MAX_MANIFEST_BYTES} bytes" in error
    assert not manifest_file(corral, name).exists()


def test_a_token_reply_past_the_cap_is_refused(corral: Server, registry: FakeRegistry) -> None:
    registry.routes["/token-huge"] = streamed(8 * MAX_TOKEN_REPLY_BYTES)
    name = registry.publish("huge/token", challenged(
        f"http://{registry.address}/token-huge", "never", reply(200, manifest(0))))
    status, error = pull(corral, name)
    assert status == 502
    assert f"token reply is larger than {MAX_TOKEN_REPLY_BYTES} bytes" in error


def test_a_model_larger_than_the_free_space_is_refused_before_anything_is_written(
        corral: Server, registry: FakeRegistry) -> None:
    declared = shutil.disk_usage(corral.models_dir).free + (1 << 40)  # 1 TiB past the free space
    name = registry.publish("huge/blob", reply(200, manifest(
        entry(CONFIG, CONFIG_MEDIA_TYPE), {**entry(WEIGHTS, MODEL_MEDIA), "size": declared})),
        {digest(CONFIG): reply(200, CONFIG), digest(WEIGHTS): streamed(declared)})
    lines = corral.post("/api/pull", {"model": name, "insecure": True}).lines()
    error = lines[-1]["error"]
    assert "not enough space" in error and f"needs {declared + len(CONFIG)} bytes more" in error
    assert registry.requested("huge/blob") == ["/v2/huge/blob/manifests/v1"]  # no blob asked
    assert not manifest_file(corral, name).exists() and leftovers(corral) == []


def test_deleting_a_model_whose_pull_failed_removes_its_partial_download(
        corral: Server, registry: FakeRegistry) -> None:
    name = registry.publish("cut/model", reply(200, manifest(
        entry(CONFIG, CONFIG_MEDIA_TYPE), entry(WEIGHTS, MODEL_MEDIA))),
        {digest(CONFIG): reply(200, CONFIG), digest(WEIGHTS): cut_off(WEIGHTS)})
    status, error = pull(corral, name)
    assert status == 502 and "broke off" in error
    partial = corral.models_dir / "blobs" / f".download-{digest(WEIGHTS)[7:]}"
    assert partial.stat().st_mode & 0o777 == BLOB_MODE  # as the blobs are
    assert corral.request("DELETE", "/api/delete", {"model": name}).status == 200
    assert leftovers(corral) == []
    assert not (corral.models_dir / "blobs" / digest(CONFIG).replace(":", "-")).exists()
    assert corral.request("DELETE", "/api/delete", {"model": name}).status == 404


def test_no_credentials_go_to_a_realm_on_another_host_over_plain_http(
        corral: Server, registry: FakeRegistry, elsewhere: FakeRegistry) -> None:
    elsewhere.routes["/token"] = reply(200, b'{"token": "t0k"}')
    name = registry.publish("realm/elsewhere", challenged(
        f"http://{elsewhere.address}/token", "t0k", reply(200, manifest(0))))
    status, error = pull(corral, name)
    assert status == 502 and f'realm host "{elsewhere.address}" does not match' in error
    assert [auth for _, auth in elsewhere.seen if auth is not None] == []


def test_a_realm_on_the_registrys_own_host_gets_the_credentials(
        corral: Server, registry: FakeRegistry) -> None:
    registry.routes["/token"] = reply(200, b'{"token": "t0k"}')
    name = registry.publish("realm/home", challenged(
        f"http://{registry.address}/token", "t0k", reply(200, manifest(
            entry(CONFIG, CONFIG_MEDIA_TYPE), entry(WEIGHTS, MODEL_MEDIA)))),
        {digest(CONFIG): reply(200, CONFIG), digest(WEIGHTS): reply(200, WEIGHTS)})
    try:
        answer = corral.post("/api/pull", {"model": name, "insecure": True, "stream": False})
        assert answer.json() == {"status": "success"}
        basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        assert ("/token", basic) in registry.seen
    finally:
        corral.request("DELETE", "/api/delete", {"model": name})


def test_a_realm_that_is_not_http_is_refused_without_echoing_it(
        corral: Server, registry: FakeRegistry) -> None:
    name = registry.publish("realm/file", challenged(
        "file:///etc/corral-secret", "t0k", reply(200, manifest(0))))
    status, error = pull(corral, name)
    assert status == 502 and "not an http(s) URL" in error and "corral-secret" not in error

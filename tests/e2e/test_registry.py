"""/api/pull and /api/push against a real OCI registry: Debian's docker-registry on a loopback
port (the `registry` fixture; .ci/run installs it)."""

from __future__ import annotations

import hashlib
import http.client
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

import orjson
import pytest

from store import registry as registry_client
from store.errors import StoreError
from store.names import parse_name
from store.store import Store
from tests.e2e.conftest import MODEL, QUICK
from tests.e2e.server import Server, free_port
from tests.full_disk import fill_disk_after


@pytest.fixture(scope="module")
def pushed(server: Server, registry: str) -> str:
    """gemma3:270m, pushed to the registry once for the module."""
    name = f"{registry}/library/gemma3:test"
    assert server.post("/api/copy", {"source": MODEL, "destination": name}).status == 200
    reply = server.post("/api/push", {"model": name, "insecure": True})
    assert reply.status == 200 and reply.lines()[-1] == {"status": "success"}, reply.body
    return name


@pytest.fixture
def empty_server(tmp_path: Path) -> Server:
    """A server over a store of its own, empty."""
    server = Server(tmp_path / "models")
    (tmp_path / "models").mkdir()
    return server.start()


def test_push_uploads_every_layer_then_the_manifest(server: Server, pushed: str) -> None:
    again = server.post("/api/push", {"model": pushed, "insecure": True}).lines()
    statuses = [line["status"] for line in again]
    assert statuses[0] == "retrieving manifest" and statuses[-2:] == ["pushing manifest", "success"]
    layers = [line for line in again if line["status"].startswith("pushing ") and "total" in line]
    assert layers and all(line["completed"] == line["total"] for line in layers)  # already there
    manifest = orjson.loads(server.models_dir.joinpath(
        "manifests", *parse_name(pushed).parts).read_bytes())
    assert layers[-1]["digest"] == manifest["config"]["digest"]  # as Ollama's: the config last


def test_pushing_a_model_not_here_says_so_in_ollamas_words(server: Server, registry: str) -> None:
    reply = server.post("/api/push", {"model": f"{registry}/library/nope:1", "insecure": True})
    lines = reply.lines()
    assert lines[:2] == [{"status": "retrieving manifest"}, {"status": "couldn't retrieve manifest"}]
    assert "not found" in lines[-1]["error"]


def test_pull_into_an_empty_store_gives_a_working_model(empty_server: Server, pushed: str) -> None:
    try:
        reply = empty_server.post("/api/pull", {"model": pushed, "insecure": True})
        lines = reply.lines()
        assert lines[0] == {"status": "pulling manifest"} and lines[-1] == {"status": "success"}
        assert {"status": "verifying sha256 digest"} in lines and {"status": "writing manifest"} in lines
        progress = [line for line in lines if "completed" in line]
        assert progress[-1]["completed"] == progress[-1]["total"]
        assert all(line["completed"] > 0 for line in progress)  # 0 is left out, as Go's omitempty
        answer = empty_server.post("/api/generate", {"model": pushed, "prompt": "hi",
                                                     "stream": False, "options": QUICK})
        assert answer.status == 200 and answer.json()["done"] is True
    finally:
        empty_server.stop()


def test_pulling_a_changed_model_removes_the_layers_it_no_longer_uses(
        server: Server, empty_server: Server, registry: str) -> None:
    name = f"{registry}/library/gemma3:prune"

    def publish(parameters: dict) -> None:
        assert server.post("/api/create", {"model": name, "from": MODEL, "stream": False,
                                           "parameters": parameters}).status == 200
        assert server.post("/api/push", {"model": name, "insecure": True}).status == 200

    def layers() -> set[str]:
        path = empty_server.models_dir / "manifests" / registry / "library/gemma3/prune"
        return {layer["digest"] for layer in orjson.loads(path.read_bytes())["layers"]}

    try:
        publish({"temperature": 0.5})
        empty_server.post("/api/pull", {"model": name, "insecure": True})
        before = layers()
        publish({"temperature": 0.7})  # a new parameters blob
        lines = empty_server.post("/api/pull", {"model": name, "insecure": True}).lines()
        assert lines[-2:] == [{"status": "removing unused layers"}, {"status": "success"}]
        [gone] = before - layers()
        assert not (empty_server.models_dir / "blobs" / gone.replace(":", "-")).exists()
    finally:
        empty_server.stop()


def test_an_interrupted_download_resumes_from_its_partial_file(empty_server: Server,
                                                               server: Server, pushed: str,
                                                               store_dir: Path) -> None:
    try:
        weights = max((store_dir / "blobs").iterdir(), key=lambda p: p.stat().st_size)
        partial = empty_server.models_dir / "blobs" / f".download-{weights.name[7:]}"
        with open(weights, "rb") as f:
            partial.write_bytes(f.read(5 << 20))
        lines = empty_server.post("/api/pull", {"model": pushed, "insecure": True}).lines()
        assert lines[-1] == {"status": "success"}
        first = next(line for line in lines if line.get("digest") == f"sha256:{weights.name[7:]}")
        assert first["completed"] == 5 << 20  # it went on from the partial file (a Range request)
        pulled = empty_server.models_dir / "blobs" / weights.name
        assert hashlib.sha256(pulled.read_bytes()).hexdigest() == weights.name[7:]
        assert not partial.exists()
    finally:
        empty_server.stop()


def test_a_corrupt_partial_file_fails_the_digest_check_and_is_dropped(empty_server: Server,
                                                                      pushed: str,
                                                                      store_dir: Path) -> None:
    try:
        weights = max((store_dir / "blobs").iterdir(), key=lambda p: p.stat().st_size)
        partial = empty_server.models_dir / "blobs" / f".download-{weights.name[7:]}"
        partial.write_bytes(b"not the start of the model")
        lines = empty_server.post("/api/pull", {"model": pushed, "insecure": True}).lines()
        assert "digest mismatch" in lines[-1]["error"]
        assert not partial.exists() and not (empty_server.models_dir / "blobs" / weights.name).exists()
        retry = empty_server.post("/api/pull", {"model": pushed, "insecure": True, "stream": False})
        assert retry.json() == {"status": "success"}
    finally:
        empty_server.stop()


def test_pulling_an_unknown_tag_is_an_error_and_writes_nothing(server: Server, registry: str,
                                                               store_dir: Path) -> None:
    name = f"{registry}/library/gemma3:nope"
    reply = server.post("/api/pull", {"model": name, "insecure": True, "stream": False})
    assert reply.status == 404
    assert reply.json() == {"error": "pull model manifest: file does not exist"}
    streamed = server.post("/api/pull", {"model": name, "insecure": True}).lines()
    assert streamed[-1] == {"error": "pull model manifest: file does not exist"}
    assert not (store_dir / "manifests" / registry).joinpath("library", "gemma3", "nope").exists()


def test_an_unreachable_registry_is_a_502_naming_it(server: Server) -> None:
    name = f"127.0.0.1:{free_port()}/library/gemma3:x"
    reply = server.post("/api/pull", {"model": name, "insecure": True, "stream": False})
    assert reply.status == 502 and "127.0.0.1" in reply.json()["error"]


def _auth_server(make_server: Callable[..., Server], registry: str, password: str) -> Server:
    return make_server(CORRAL_REGISTRY_AUTH=f"{registry}=corral:{password}")


def test_push_and_pull_with_the_registrys_password(make_server: Callable[..., Server],
                                                   auth_registry: str) -> None:
    srv = _auth_server(make_server, auth_registry, "s3cret")
    name = f"{auth_registry}/team/gemma3:private"
    assert srv.post("/api/copy", {"source": MODEL, "destination": name}).status == 200
    pushed = srv.post("/api/push", {"model": name, "insecure": True, "stream": False})
    assert pushed.json() == {"status": "success"}, pushed.body
    assert srv.request("DELETE", "/api/delete", {"model": name}).status == 200
    pulled = srv.post("/api/pull", {"model": name, "insecure": True, "stream": False})
    assert pulled.json() == {"status": "success"}, pulled.body


def test_a_wrong_password_is_an_error_naming_the_registry(make_server: Callable[..., Server],
                                                          auth_registry: str) -> None:
    srv = _auth_server(make_server, auth_registry, "wrong")
    name = f"{auth_registry}/team/gemma3:private"
    lines = srv.post("/api/pull", {"model": name, "insecure": True}).lines()
    assert auth_registry in lines[-1]["error"] and "401" in lines[-1]["error"]
    assert srv.post("/api/pull", {"model": name, "insecure": True, "stream": False}).status == 502


class _FaultyProxy:
    """A loopback TCP proxy to the registry, as a flaky network: it cuts the connection on which
    the bytes sent back to the client pass `cut_after` in all, and flips one byte once, at
    position `flip_at` of a connection's replies (past any headers: the first replies on a
    connection are the small manifest and config). It counts connections, and the bytes it
    passes each way."""

    def __init__(self, upstream: str, cut_after: int = 1 << 62, flip_at: int = 1 << 62,
                 pause: float = 0) -> None:
        self.target = upstream.rsplit(":", 1)
        self.cut_after = cut_after
        self.flip_at = flip_at
        self.pause = pause  # seconds after each 64 KiB sent back: a slow network
        self.cut = self.flipped = False
        self.downstream = self.upstream = self.connections = 0
        self._count = threading.Lock()  # the pipes run on threads of their own
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection((self.target[0], int(self.target[1])))
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, to_client: bool) -> None:
        sent = 0
        try:
            while data := source.recv(1 << 16):
                if to_client:
                    data = self._flipped(data, sent)
                sink.sendall(data)
                sent += len(data)
                if self._counted(len(data), to_client):
                    break
                if to_client:
                    time.sleep(self.pause)
        except OSError:
            pass
        for end in (source, sink):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            end.close()

    def _flipped(self, data: bytes, sent: int) -> bytes:
        """The data, with its byte at connection position `flip_at` inverted if it holds it."""
        at = self.flip_at - sent
        with self._count:
            if self.flipped or not 0 <= at < len(data):
                return data
            self.flipped = True
        return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]

    def _counted(self, sent: int, to_client: bool) -> bool:
        """Counts bytes passed on; True if this connection is to be cut now."""
        with self._count:
            if not to_client:
                self.upstream += sent
                return False
            self.downstream += sent
            cut_now = not self.cut and self.downstream > self.cut_after
            self.cut = self.cut or cut_now
        return cut_now

    def close(self) -> None:
        self.listener.close()


def test_a_pull_cut_off_mid_blob_resumes_where_it_stopped(empty_server: Server, registry: str,
                                                          pushed: str, store_dir: Path) -> None:
    weights = max((store_dir / "blobs").iterdir(), key=lambda p: p.stat().st_size)
    size = weights.stat().st_size
    proxy = _FaultyProxy(registry, cut_after=size // 2)
    name = pushed.replace(registry, proxy.address)
    try:
        first = empty_server.post("/api/pull", {"model": name, "insecure": True}).lines()
        assert "broke off" in first[-1]["error"] and proxy.cut
        assert not (empty_server.models_dir / "manifests" / proxy.address).exists()
        second = empty_server.post("/api/pull", {"model": name, "insecure": True, "stream": False})
        assert second.json() == {"status": "success"}
        # Both pulls together: the blob once, and what was in flight at the cut. Starting over
        # would have sent 1.5x.
        assert proxy.downstream < 1.25 * size
        pulled = empty_server.models_dir / "blobs" / weights.name
        assert hashlib.sha256(pulled.read_bytes()).hexdigest() == weights.name[7:]
    finally:
        proxy.close()
        empty_server.stop()


def test_a_pull_the_client_abandons_keeps_its_partial_download(empty_server: Server,
                                                              registry: str, pushed: str,
                                                              store_dir: Path) -> None:
    weights = max((store_dir / "blobs").iterdir(), key=lambda p: p.stat().st_size)
    proxy = _FaultyProxy(registry, pause=0.002)  # about 30 MB/s a connection
    name = pushed.replace(registry, proxy.address)
    try:
        client = http.client.HTTPConnection("127.0.0.1", empty_server.port)
        client.request("POST", "/api/pull", orjson.dumps({"model": name, "insecure": True}))
        reply = client.getresponse()
        while orjson.loads(reply.readline()).get("completed", 0) < 8 << 20:
            pass
        client.close()  # the client gives up
        seen = -1
        while proxy.downstream != seen:  # until the server has stopped downloading
            seen = proxy.downstream
            time.sleep(0.5)
        assert not (empty_server.models_dir / "blobs" / weights.name).exists()
        lines = empty_server.post("/api/pull", {"model": name, "insecure": True}).lines()
        resumed = next(line for line in lines if line.get("digest") == f"sha256:{weights.name[7:]}")
        assert resumed["completed"] >= 8 << 20 and lines[-1] == {"status": "success"}
    finally:
        proxy.close()
        empty_server.stop()


def test_two_pulls_of_one_model_share_one_download(empty_server: Server, registry: str,
                                                   pushed: str, store_dir: Path) -> None:
    size = max(p.stat().st_size for p in (store_dir / "blobs").iterdir())
    proxy = _FaultyProxy(registry)  # counts, changes nothing
    name = pushed.replace(registry, proxy.address)
    try:
        with ThreadPoolExecutor(2) as pool:
            replies = list(pool.map(lambda _: empty_server.post(
                "/api/pull", {"model": name, "insecure": True, "stream": False}), range(2)))
        assert [r.json() for r in replies] == [{"status": "success"}] * 2
        assert proxy.downstream < 1.5 * size
    finally:
        proxy.close()
        empty_server.stop()


def test_a_blob_corrupted_on_the_way_fails_its_digest_and_counts_for_nothing(
        empty_server: Server, registry: str, pushed: str, store_dir: Path) -> None:
    weights = max((store_dir / "blobs").iterdir(), key=lambda p: p.stat().st_size)
    proxy = _FaultyProxy(registry, flip_at=1 << 20)
    name = pushed.replace(registry, proxy.address)
    try:
        lines = empty_server.post("/api/pull", {"model": name, "insecure": True}).lines()
        assert proxy.flipped and "digest mismatch" in lines[-1]["error"]
        blobs = empty_server.models_dir / "blobs"
        assert not (blobs / weights.name).exists()
        assert [p.name for p in blobs.iterdir() if p.name.startswith(".download-")] == []  # no resume
        assert not (empty_server.models_dir / "manifests" / proxy.address).exists()
    finally:
        proxy.close()
        empty_server.stop()


async def test_a_full_disk_ends_the_pull_with_a_clear_error_and_the_next_pull_resumes(
        pushed: str, store_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    weights = max((store_dir / "blobs").iterdir(), key=lambda p: p.stat().st_size)
    digest = f"sha256:{weights.name[7:]}"
    store, name = Store(tmp_path / "models"), parse_name(pushed)
    fill_disk_after(monkeypatch, 40 << 20)
    with pytest.raises(StoreError, match="no space left on device") as raised:
        async for _ in registry_client.pull(store, name, insecure=True):
            pass
    assert str(store.root) in str(raised.value)
    assert store.read_manifest(name) is None and not store.has_blob(digest)
    monkeypatch.undo()  # space was freed
    events = [event async for event in registry_client.pull(store, name, insecure=True)]
    assert events[-1] == {"status": "success"}
    config = store.read_manifest(name).config  # pulled first, into the same room
    assert next(e for e in events if e.get("digest") == digest)["completed"] == (40 << 20) - config.size
    assert hashlib.sha256(store.read_blob(digest)).hexdigest() == digest[7:]


@pytest.fixture
def proxy(registry: str) -> Iterator[_FaultyProxy]:
    """A proxy that changes nothing: a registry host of its own to the client, and a byte count."""
    proxy = _FaultyProxy(registry)
    yield proxy
    proxy.close()


def _push_copy(server: Server, name: str) -> list[dict[str, Any]]:
    """Pushes gemma3:270m as `name`, then forgets the name (the shared store stays as it was)."""
    assert server.post("/api/copy", {"source": MODEL, "destination": name}).status == 200
    try:
        return server.post("/api/push", {"model": name, "insecure": True}).lines()
    finally:
        server.request("DELETE", "/api/delete", {"model": name})


def test_a_large_blob_goes_up_in_chunks_with_progress(server: Server, proxy: _FaultyProxy,
                                                       store_dir: Path) -> None:
    weights = max((store_dir / "blobs").iterdir(), key=lambda p: p.stat().st_size)
    lines = _push_copy(server, f"{proxy.address}/chunked/gemma3:v1")
    assert lines[-1] == {"status": "success"}
    # A line of 0 bytes sent leaves `completed` out, as Ollama's (omitempty).
    sent = [line.get("completed", 0) for line in lines
            if line.get("digest") == f"sha256:{weights.name[7:]}"]
    assert sent == list(range(0, sent[-1], registry_client.UPLOAD_CHUNK)) + [sent[-1]]
    assert sent[-1] == weights.stat().st_size and len(sent) > 2


def test_a_blob_in_another_repository_of_the_registry_is_mounted_not_sent(
        server: Server, proxy: _FaultyProxy, store_dir: Path) -> None:
    size = max(p.stat().st_size for p in (store_dir / "blobs").iterdir())
    first = f"{proxy.address}/library/gemma3:mount"
    assert server.post("/api/copy", {"source": MODEL, "destination": first}).status == 200
    try:
        assert server.post("/api/push", {"model": first, "insecure": True,
                                         "stream": False}).json() == {"status": "success"}
        before = proxy.upstream
        lines = _push_copy(server, f"{proxy.address}/team/mounted:v1")
        assert lines[-1] == {"status": "success"}
        assert proxy.upstream - before < size / 100  # requests and the manifest, no blob
    finally:
        server.request("DELETE", "/api/delete", {"model": first})


@pytest.mark.parametrize("fast, connections", [(True, 1), (False, registry_client.CONNECTIONS)])
async def test_a_blob_comes_over_one_connection_if_it_is_fast_else_over_several(
        fast: bool, connections: int, proxy: _FaultyProxy, pushed: str, registry: str,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_client, "ONE_CONNECTION_ENOUGH", 0 if fast else float("inf"))
    store, name = Store(tmp_path / "models"), parse_name(pushed.replace(registry, proxy.address))
    events = [event async for event in registry_client.pull(store, name, insecure=True)]
    assert events[-1] == {"status": "success"} and store.read_manifest(name) is not None
    assert proxy.connections == connections

"""Pulling and pushing models through an OCI registry (the distribution API Ollama's registry
speaks), with aiohttp's client. Both are async iterators of Ollama's progress events.

Pull: the manifest first, read up to MAX_MANIFEST_BYTES and checked whole (nothing is written if it
does not exist or fails the check, or if the disk lacks room for the blobs it names); then a record
of its blobs, so that deleting the name removes what a failed pull left; then each missing layer as
a `store.download.Download`: the byte ranges it still lacks (all, or what an interrupted try left
out, also across a restart) in parts of PART bytes, over up to CONNECTIONS connections where the
network is the bottleneck, hashed as they land and checked against the digest before the blob
counts (the config blob must also be a config Ollama can read); the manifest is written last,
atomically. Push: each layer the registry lacks (HEAD) is mounted from another repository of the
registry that a local manifest says holds it, or else goes up in PATCHes of UPLOAD_CHUNK bytes
closed by a PUT naming its digest; then the manifest. A
registry that challenges (WWW-Authenticate) gets the operator's credentials (`credentials`): as
Basic auth, or to fetch a bearer token from its realm, if that realm may have them
(`_may_have_credentials`); an Authorization goes only to the registry's own host.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import re
import time
import weakref
from pathlib import Path
from typing import Any, AsyncIterator, Mapping

import aiohttp
import orjson
from yarl import URL

from store.download import Download
from store.errors import InvalidManifest, NoSpace, NotFound, RegistryError
from store.names import ModelName
from store.store import (MANIFEST_MEDIA_TYPE, MAX_MANIFEST_BYTES, OCI_MANIFEST_MEDIA_TYPE, Layer,
                         Store, parse_config, parse_manifest)

ACCEPT = f"{MANIFEST_MEDIA_TYPE}, {OCI_MANIFEST_MEDIA_TYPE}"
MAX_TOKEN_REPLY_BYTES = 1 << 20  # a token reply is a few KB of JSON (a JWT); it is read whole
CHUNK = 1 << 20  # bytes handed to the disk thread at a time
PART = 16 << 20  # a blob comes in ranges of this size ...
CONNECTIONS = 4  # ... over up to this many connections at once, unless one is fast enough:
# one bringing this many bytes a second leaves the CPU, not the network, as the limit (hashing on
# one core does about 1 GB/s); more connections would only take CPU from hashing. Measured on a
# loopback registry: one connection 0.27-0.30 x curl, four 0.22-0.24 x, and slower /api/tags.
ONE_CONNECTION_ENOUGH = 256 << 20
PROGRESS_EVERY = 0.1  # seconds between progress events of a download
UPLOAD_CHUNK = 32 << 20  # a push sends a blob in PATCHes of this size
Event = dict[str, Any]
_CHALLENGE = re.compile(r'(\w+)="([^"]*)"')


Credentials = tuple[str, str]  # (user, password)


def credentials(host: str, environ: Mapping[str, str]) -> Credentials | None:
    """The operator's credentials for a registry: `CORRAL_REGISTRY_AUTH` (host=user:password,
    comma-separated), else the docker-style `config.json` in $DOCKER_CONFIG (~/.docker)."""
    for entry in environ.get("CORRAL_REGISTRY_AUTH", "").split(","):
        entry_host, _, secret = entry.strip().partition("=")
        if entry_host == host and ":" in secret:
            user, _, password = secret.partition(":")
            return user, password
    path = Path(environ.get("DOCKER_CONFIG") or "~/.docker").expanduser() / "config.json"
    try:
        auths = orjson.loads(path.read_bytes()).get("auths", {})
    except (OSError, orjson.JSONDecodeError, AttributeError):
        return None
    for key in (host, f"https://{host}", f"http://{host}"):
        encoded = (auths.get(key) or {}).get("auth") if isinstance(auths, dict) else None
        if encoded:
            user, _, password = base64.b64decode(encoded).decode(errors="replace").partition(":")
            return user, password
    return None


class _Session:
    """One registry conversation: base URL, the repository, and the credentials or bearer token
    the registry asked for."""

    def __init__(self, http: aiohttp.ClientSession, name: ModelName, insecure: bool,
                 login: Credentials | None) -> None:
        self.http = http
        self.name = name
        self.base = f"{'http' if insecure else 'https'}://{name.host}/v2/{name.namespace}/{name.model}"
        self._origin = URL(self.base).origin()
        self._login = aiohttp.BasicAuth(*login) if login else None
        self._authorization: str | None = None  # "Basic ..." or "Bearer ..." once challenged

    async def request(self, method: str, url: str, headers: dict[str, str] | None = None,
                      **kw: Any) -> aiohttp.ClientResponse:
        """The response, after fetching a token once if the registry challenges for one."""
        for attempt in range(2):
            sent = dict(headers or {})
            # To the registry itself only: an upload's Location may name another host.
            if self._authorization and URL(url).origin() == self._origin:
                sent["Authorization"] = self._authorization
            try:
                response = await self.http.request(method, url, headers=sent, **kw)
            except aiohttp.ClientError as exc:
                raise RegistryError(f"{self.name.host}: {exc or type(exc).__name__}") from None
            if response.status not in (401, 403):
                return response
            challenge = response.headers.get("WWW-Authenticate", "")
            response.release()
            if attempt or not await self._answer(challenge):
                break
        raise RegistryError(f"{self.name.host}: unauthorized ({response.status}); check the "
                            "credentials for this registry (CORRAL_REGISTRY_AUTH or "
                            "~/.docker/config.json)")

    async def _answer(self, challenge: str) -> bool:
        """Sets the Authorization a challenge asks for; False if there is none to give."""
        scheme = challenge.split(" ", 1)[0].lower()
        if scheme == "bearer":
            token = await self._fetch_token(dict(_CHALLENGE.findall(challenge)))
            self._authorization = f"Bearer {token}"
            return True
        if scheme == "basic" and self._login is not None:
            self._authorization = self._login.encode()
            return True
        return False

    async def _fetch_token(self, params: dict[str, str]) -> str:
        host = self.name.host
        try:
            realm = URL(params.pop("realm", ""))
        except ValueError:
            realm = URL()
        if realm.scheme not in ("http", "https") or not realm.host:
            # Not echoed: the text is the registry's, and may name a local file.
            raise RegistryError(f"{host}: the registry's token realm is not an http(s) URL")
        login = self._login
        if login is not None and not _may_have_credentials(self._origin, realm):
            # Ollama's words (server/auth.go), and why this one is refused where https is not.
            raise RegistryError(f'realm host "{realm.host}:{realm.port}" does not match original '
                                f'host "{host}" (credentials go to another host over https only)')
        try:
            # aiohttp drops the credentials on a redirect to another origin.
            async with self.http.get(realm, params=params, auth=login) as response:
                if response.status != 200:
                    raise RegistryError(f"{host}: token request failed ({response.status})")
                body = await _read_capped(response, MAX_TOKEN_REPLY_BYTES, host, "token reply")
        except aiohttp.ClientError as exc:
            raise RegistryError(f"{host}: token request to {realm.host} failed: "
                                f"{type(exc).__name__}") from None
        return _token(body, host)


def _may_have_credentials(registry: URL, realm: URL) -> bool:
    """Whether a token realm may be sent the registry's credentials: on the registry's own host
    and port, or on another host over https (docker sends them to any realm, and Docker Hub's is
    auth.docker.io; Ollama sends its signature to its own host only). Over plain http to another
    host they would go to whoever answers there, readable on the way: that is refused, as Ollama
    refuses a realm off the registry's host, rather than tried without them (which could only
    fail, and less clearly). Without credentials configured there is nothing to leak."""
    return (realm.host, realm.port) == (registry.host, registry.port) or realm.scheme == "https"


def _token(body: bytes, host: str) -> str:
    """The bearer token of a token reply (`token`, or OAuth's `access_token`)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = None
    token = (doc.get("token") or doc.get("access_token")) if isinstance(doc, dict) else None
    # It goes into a header: printable ASCII only, no line breaks.
    if not isinstance(token, str) or not (token.isascii() and token.isprintable()):
        raise RegistryError(f"{host}: the registry's token reply holds no token")
    return token


async def _read_capped(response: aiohttp.ClientResponse, cap: int, host: str, what: str) -> bytes:
    """A response's body, refused once it is over `cap` bytes, as declared or as sent: no more
    than that is read, whatever the registry sends."""
    too_large = RegistryError(f"{host}: the registry's {what} is larger than {cap} bytes")
    if (response.content_length or 0) > cap:
        raise too_large
    body = bytearray()
    try:
        async for chunk, _ in response.content.iter_chunks():
            body += chunk
            if len(body) > cap:
                raise too_large
    except aiohttp.ClientError as exc:
        raise RegistryError(f"{host}: the {what} broke off: {exc or type(exc).__name__}") from None
    return bytes(body)


def _client() -> aiohttp.ClientSession:
    # trust_env: HTTPS_PROXY / NO_PROXY as the operator set them.
    return aiohttp.ClientSession(trust_env=True, timeout=aiohttp.ClientTimeout(sock_read=60),
                                 read_bufsize=CHUNK)


# ---- pull --------------------------------------------------------------------------------


async def pull(store: Store, name: ModelName, insecure: bool,
               login: Credentials | None = None) -> AsyncIterator[Event]:
    try:
        async with _client() as http:
            session = _Session(http, name, insecure, login)
            yield {"status": "pulling manifest"}
            raw = await _manifest(session)
            config, layers = _parsed(raw, name.host)
            blobs = [config, *layers]
            await asyncio.to_thread(store.ensure_room, blobs)
            await asyncio.to_thread(store.record_pull, name, blobs)
            # Pinned: a delete meanwhile must not prune a blob this pull has fetched.
            with store.pinned(blob.digest for blob in blobs):
                async for event in _download(session, store, config):
                    yield event
                await asyncio.to_thread(_check_config, store, name, config)
                for layer in layers:
                    async for event in _download(session, store, layer):
                        yield event
                yield {"status": "verifying sha256 digest"}
                yield {"status": "writing manifest"}
                replaced = await asyncio.to_thread(store.write_manifest_bytes, name, raw)
            await asyncio.to_thread(store.forget_pull, name)
            if replaced and store.prunes:  # as Ollama's PullModel: what the old one named
                yield {"status": "removing unused layers"}
                await asyncio.to_thread(store.prune, replaced)
            yield {"status": "success"}
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        raise NoSpace(f"no space left on device for the model store in {store.root}; what "
                      "was downloaded is kept: free some space and pull again") from None


async def _manifest(session: _Session) -> bytes:
    url = f"{session.base}/manifests/{session.name.tag}"
    response = await session.request("GET", url, headers={"Accept": ACCEPT})
    async with response:
        if response.status == 404:
            raise NotFound("pull model manifest: file does not exist")
        if response.status != 200:
            raise RegistryError(f"{session.name.host}: manifest request failed "
                                f"({response.status})")
        return await _read_capped(response, MAX_MANIFEST_BYTES, session.name.host, "manifest")


def _parsed(raw: bytes, host: str) -> tuple[Layer, tuple[Layer, ...]]:
    try:
        return parse_manifest(raw)
    except InvalidManifest as exc:
        raise RegistryError(f"{host}: the registry sent a malformed manifest: {exc}") from None


def _check_config(store: Store, name: ModelName, config: Layer) -> None:
    """The config blob, its digest matched, must be one Ollama can read. One that is not is of
    no use to any model (a manifest naming it is skipped as damaged) and goes at once; it came
    first, so the pull leaves nothing behind."""
    try:
        parse_config(store.read_blob(config.digest))
    except InvalidManifest as exc:
        store.blob_path(config.digest).unlink(missing_ok=True)
        store.forget_pull(name)
        raise RegistryError(f"{name.host}: the registry sent a malformed model config: "
                            f"{exc}") from None


# One download per blob at a time: a second pull of the same layer waits for the first, then
# finds the blob in place, instead of writing the same partial file from two connections.
_DOWNLOADS: weakref.WeakValueDictionary[Path, asyncio.Lock] = weakref.WeakValueDictionary()


async def _download(session: _Session, store: Store, layer: Layer) -> AsyncIterator[Event]:
    target = store.blob_path(layer.digest)
    lock = _DOWNLOADS.setdefault(target, asyncio.Lock())
    async with lock:
        async for event in _fetch(session, store, layer):
            yield event


def _progress(event: Event, completed: int) -> Event:
    """A progress line; none of 0 bytes yet names `completed`, as Go's omitempty leaves it out."""
    return {**event, "completed": completed} if completed else event


async def _fetch(session: _Session, store: Store, layer: Layer) -> AsyncIterator[Event]:
    event = {"status": f"pulling {layer.digest[7:19]}", "digest": layer.digest,
             "total": layer.size}
    if store.has_blob(layer.digest):
        yield _progress(event, layer.size)
        return
    download = await asyncio.to_thread(Download, store, layer.digest, layer.size)
    fetching = asyncio.ensure_future(_fetch_parts(session, download,
                                                  f"{session.base}/blobs/{layer.digest}"))
    try:
        while not fetching.done():
            yield _progress(event, download.received)
            await asyncio.wait([fetching], timeout=PROGRESS_EVERY)
        fetching.result()
        yield _progress(event, download.received)
        await download.finish()
    finally:
        await _cancelled(fetching)
        await download.close()


async def _fetch_parts(session: _Session, download: Download, url: str) -> None:
    """The missing ranges of a blob: the first on one connection, then the rest over up to
    CONNECTIONS, or on that one if it was fast (ONE_CONNECTION_ENOUGH)."""
    parts = download.missing(PART)
    if not parts:
        return
    started = time.monotonic()
    first = await _open_part(session, url, parts[0], download.size)
    await _copy(session, first, download)
    if first[1:] == (0, download.size):  # the whole blob (how a registry without Range answers)
        return
    fast = first[2] - first[1] >= ONE_CONNECTION_ENOUGH * (time.monotonic() - started)
    rest = iter(parts[1:])

    async def more() -> None:
        for part in rest:
            await _copy(session, await _open_part(session, url, part, download.size), download)

    tasks = [asyncio.ensure_future(more()) for _ in range(1 if fast else CONNECTIONS)]
    try:
        await asyncio.gather(*tasks)
    finally:  # the first failure ends the others: the pull reports it and stops
        for task in tasks:
            await _cancelled(task)


Part = tuple[aiohttp.ClientResponse, int, int]  # a response and the [start, end) its body holds


async def _open_part(session: _Session, url: str, part: tuple[int, int], size: int) -> Part:
    start, end = part
    response = await session.request("GET", url, headers={"Range": f"bytes={start}-{end - 1}"})
    if response.status == 200:  # the registry ignored Range: this is the whole blob
        return response, 0, size
    if response.status == 206 and response.headers.get("Content-Range", "").startswith(
            f"bytes {start}-"):
        return response, start, end
    response.release()
    raise RegistryError(f"{session.name.host}: blob {url.rsplit('/', 1)[1]} ({response.status})")


async def _copy(session: _Session, part: Part, download: Download) -> None:
    """Hands a response's body to the download in batches of about CHUNK bytes."""
    response, offset, end = part
    async with response:
        batch: list[bytes] = []
        batched = 0
        try:
            # iter_chunks hands over what arrived as it is (readany joins it into a copy).
            async for chunk, _ in response.content.iter_chunks():
                batch.append(chunk)
                batched += len(chunk)
                if batched >= CHUNK:
                    await download.write(offset, batch)
                    offset, batch, batched = offset + batched, [], 0
        except aiohttp.ClientError as exc:  # what arrived stays, for the next try to resume
            raise RegistryError(f"{session.name.host}: download broke off: "
                                f"{exc or type(exc).__name__}") from None
        if batch:
            await download.write(offset, batch)
            offset += batched
        if offset != end:
            raise RegistryError(f"{session.name.host}: download broke off at byte {offset} "
                                f"of {end}")


async def _cancelled(task: asyncio.Future[None]) -> None:
    """Cancels the task and waits until it has stopped (its failure, if any, was reported)."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


# ---- push --------------------------------------------------------------------------------


async def push(store: Store, name: ModelName, insecure: bool,
               login: Credentials | None = None) -> AsyncIterator[Event]:
    yield {"status": "retrieving manifest"}
    manifest = store.read_manifest(name)
    if manifest is None:
        yield {"status": "couldn't retrieve manifest"}  # as Ollama's PushModel, then the error
        raise NotFound(f'model "{name.display}" not found')
    raw = store.manifest_path(name).read_bytes()
    mountable = await asyncio.to_thread(_elsewhere_on_registry, store, name)
    async with _client() as http:
        session = _Session(http, name, insecure, login)
        for layer in (*manifest.layers, manifest.config):  # as Ollama's: the config last
            async for event in _upload(session, store, layer, mountable.get(layer.digest)):
                yield event
        yield {"status": "pushing manifest"}
        response = await session.request(
            "PUT", f"{session.base}/manifests/{name.tag}", data=raw,
            headers={"Content-Type": orjson.loads(raw).get("mediaType", MANIFEST_MEDIA_TYPE)})
        async with response:
            if response.status not in (200, 201):
                raise RegistryError(f"{name.host}: manifest upload failed ({response.status})")
    yield {"status": "success"}


def _elsewhere_on_registry(store: Store, name: ModelName) -> dict[str, str]:
    """Digest -> another repository of the same registry that a local manifest says holds it:
    the registry can mount the blob from there instead of receiving it again."""
    repositories: dict[str, str] = {}
    for other, manifest in store.list_manifests():
        if other.host == name.host and (other.namespace, other.model) != (name.namespace,
                                                                          name.model):
            for layer in (manifest.config, *manifest.layers):
                repositories.setdefault(layer.digest, f"{other.namespace}/{other.model}")
    return repositories


async def _upload(session: _Session, store: Store, layer: Layer,
                  mount_from: str | None) -> AsyncIterator[Event]:
    """One blob: nothing if the registry has it, a cross-repository mount if it can, else PATCHes
    of UPLOAD_CHUNK bytes (progress after each) and a PUT that names the digest."""
    event = {"status": f"pushing {layer.digest[7:19]}", "digest": layer.digest,
             "total": layer.size}
    head = await session.request("HEAD", f"{session.base}/blobs/{layer.digest}")
    head.release()
    if head.status == 200:
        yield _progress(event, layer.size)
        return
    mount = f"?mount={layer.digest}&from={mount_from}" if mount_from else ""
    start = await session.request("POST", f"{session.base}/blobs/uploads/{mount}")
    async with start:
        location = start.headers.get("Location", "")
        if start.status == 201 and mount:  # mounted: nothing to send
            yield _progress(event, layer.size)
            return
        if start.status != 202 or not location:
            raise RegistryError(f"{session.name.host}: upload refused ({start.status})")
    path = store.blob_path(layer.digest)
    for offset in range(0, layer.size, UPLOAD_CHUNK):
        yield _progress(event, offset)
        data = await asyncio.to_thread(_read_at, path, offset, UPLOAD_CHUNK)
        location = await _send(session, "PATCH", location, data, {
            "Content-Type": "application/octet-stream",
            "Content-Range": f"{offset}-{offset + len(data) - 1}"})
    separator = "&" if "?" in location else "?"
    await _send(session, "PUT", f"{location}{separator}digest={layer.digest}", b"", {})
    yield _progress(event, layer.size)


async def _send(session: _Session, method: str, location: str, data: bytes,
                headers: dict[str, str]) -> str:
    """One request of an upload session; returns where the session goes on."""
    if location.startswith("/"):
        location = f"{session.base.split('/v2/')[0]}{location}"
    response = await session.request(method, location, data=data, headers=headers)
    async with response:
        if response.status not in (201, 202, 204):
            raise RegistryError(f"{session.name.host}: blob upload failed ({response.status})")
        return response.headers.get("Location", location)


def _read_at(path: Path, offset: int, count: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(count)

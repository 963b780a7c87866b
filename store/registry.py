"""Pulling and pushing models through an OCI registry (the distribution API Ollama's registry
speaks), with aiohttp's client. Both are async iterators of Ollama's progress events.

Pull: the manifest first (nothing is written if it does not exist), then each missing layer
into `blobs/.download-<hex>`, resumed with a Range request if a partial file is there (also after
a restart), hashed and checked against its digest before it is renamed into place; the manifest
is written last, atomically. Push: each layer the registry lacks (HEAD) goes up in one PUT of an
upload session, then the manifest. A registry that challenges (WWW-Authenticate) gets the
operator's credentials (`credentials`): as Basic auth, or to fetch a bearer token from its realm.
"""

from __future__ import annotations

import asyncio
import base64
import re
import weakref
from pathlib import Path
from typing import Any, AsyncIterator, Mapping

import aiohttp
import orjson

from store.errors import InvalidInput, NotFound, RegistryError
from store.names import ModelName
from store.store import MANIFEST_MEDIA_TYPE, Layer, Store, atomic_write, normalize_digest

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
ACCEPT = f"{MANIFEST_MEDIA_TYPE}, {OCI_MANIFEST}"
CHUNK = 1 << 20
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
        self._login = aiohttp.BasicAuth(*login) if login else None
        self._authorization: str | None = None  # "Basic ..." or "Bearer ..." once challenged

    async def request(self, method: str, url: str, headers: dict[str, str] | None = None,
                      **kw: Any) -> aiohttp.ClientResponse:
        """The response, after fetching a token once if the registry challenges for one."""
        for attempt in range(2):
            sent = dict(headers or {})
            if self._authorization:
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
        realm = params.pop("realm", "")
        async with self.http.get(realm, params=params, auth=self._login) as response:
            if response.status != 200:
                raise RegistryError(f"{self.name.host}: token request failed ({response.status})")
            body = await response.json(content_type=None)
        return str(body.get("token") or body.get("access_token") or "")


def _client() -> aiohttp.ClientSession:
    # trust_env: HTTPS_PROXY / NO_PROXY as the operator set them.
    return aiohttp.ClientSession(trust_env=True, timeout=aiohttp.ClientTimeout(sock_read=60))


# ---- pull --------------------------------------------------------------------------------


async def pull(store: Store, name: ModelName, insecure: bool,
               login: Credentials | None = None) -> AsyncIterator[Event]:
    async with _client() as http:
        session = _Session(http, name, insecure, login)
        yield {"status": "pulling manifest"}
        raw = await _manifest(session)
        doc = orjson.loads(raw)
        layers = [_layer(entry) for entry in [doc.get("config"), *doc.get("layers", [])]
                  if entry]
        for layer in layers:
            async for event in _download(session, store, layer):
                yield event
        yield {"status": "verifying sha256 digest"}
        yield {"status": "writing manifest"}
        await asyncio.to_thread(atomic_write, store.manifest_path(name), raw)
        yield {"status": "success"}


async def _manifest(session: _Session) -> bytes:
    url = f"{session.base}/manifests/{session.name.tag}"
    response = await session.request("GET", url, headers={"Accept": ACCEPT})
    async with response:
        if response.status == 404:
            raise NotFound("pull model manifest: file does not exist")
        if response.status != 200:
            raise RegistryError(f"{session.name.host}: manifest request failed "
                                f"({response.status})")
        return await response.read()


def _layer(entry: Any) -> Layer:
    if not isinstance(entry, dict):
        raise RegistryError("the registry sent a malformed manifest")
    try:
        return Layer(str(entry.get("mediaType", "")), normalize_digest(entry["digest"]),
                     int(entry["size"]))
    except (KeyError, TypeError, ValueError, InvalidInput):
        raise RegistryError("the registry sent a malformed manifest") from None


# One download per blob at a time: a second pull of the same layer waits for the first, then
# finds the blob in place, instead of writing the same partial file from two connections.
_DOWNLOADS: weakref.WeakValueDictionary[Path, asyncio.Lock] = weakref.WeakValueDictionary()


async def _download(session: _Session, store: Store, layer: Layer) -> AsyncIterator[Event]:
    target = store.blob_path(layer.digest)
    lock = _DOWNLOADS.setdefault(target, asyncio.Lock())
    async with lock:
        async for event in _fetch(session, store, layer):
            yield event


async def _fetch(session: _Session, store: Store, layer: Layer) -> AsyncIterator[Event]:
    status = f"pulling {layer.digest[7:19]}"
    if store.has_blob(layer.digest):
        yield {"status": status, "digest": layer.digest, "total": layer.size,
               "completed": layer.size}
        return
    partial = store.blobs_dir / f".download-{layer.digest[7:]}"
    writer = await asyncio.to_thread(store.blob_writer, layer.digest, partial)
    try:
        headers = {"Range": f"bytes={writer.size}-"} if writer.size else {}
        response = await session.request("GET", f"{session.base}/blobs/{layer.digest}",
                                         headers=headers)
        async with response:
            if response.status == 200 and writer.size:  # the registry ignored Range: start over
                await asyncio.to_thread(writer.restart)
            elif response.status not in (200, 206):
                raise RegistryError(f"{session.name.host}: blob {layer.digest} "
                                    f"({response.status})")
            yield {"status": status, "digest": layer.digest, "total": layer.size,
                   "completed": writer.size}
            try:
                async for chunk in response.content.iter_chunked(CHUNK):
                    await asyncio.to_thread(writer.write, chunk)
                    yield {"status": status, "digest": layer.digest, "total": layer.size,
                           "completed": writer.size}
            except aiohttp.ClientError as exc:  # what arrived stays, for the next try to resume
                raise RegistryError(f"{session.name.host}: download of {layer.digest} broke "
                                    f"off: {exc or type(exc).__name__}") from None
    except BaseException:
        writer.abort()  # keeps the partial file for the next try
        raise
    # A wrong file is no start for a resume: commit removes it and raises DigestMismatch.
    await asyncio.to_thread(writer.commit)


# ---- push --------------------------------------------------------------------------------


async def push(store: Store, name: ModelName, insecure: bool,
               login: Credentials | None = None) -> AsyncIterator[Event]:
    yield {"status": "retrieving manifest"}
    manifest = store.read_manifest(name)
    if manifest is None:
        raise NotFound(f'model "{name.display}" not found')
    raw = store.manifest_path(name).read_bytes()
    async with _client() as http:
        session = _Session(http, name, insecure, login)
        for layer in (manifest.config, *manifest.layers):
            async for event in _upload(session, store, layer):
                yield event
        yield {"status": "pushing manifest"}
        response = await session.request(
            "PUT", f"{session.base}/manifests/{name.tag}", data=raw,
            headers={"Content-Type": orjson.loads(raw).get("mediaType", MANIFEST_MEDIA_TYPE)})
        async with response:
            if response.status not in (200, 201):
                raise RegistryError(f"{name.host}: manifest upload failed ({response.status})")
    yield {"status": "success"}


async def _upload(session: _Session, store: Store, layer: Layer) -> AsyncIterator[Event]:
    status = f"pushing {layer.digest[7:19]}"
    event = {"status": status, "digest": layer.digest, "total": layer.size}
    head = await session.request("HEAD", f"{session.base}/blobs/{layer.digest}")
    head.release()
    if head.status == 200:
        yield {**event, "completed": layer.size}
        return
    start = await session.request("POST", f"{session.base}/blobs/uploads/")
    async with start:
        location = start.headers.get("Location", "")
        if start.status != 202 or not location:
            raise RegistryError(f"{session.name.host}: upload refused ({start.status})")
    if location.startswith("/"):
        location = f"{session.base.split('/v2/')[0]}{location}"
    yield {**event, "completed": 0}
    separator = "&" if "?" in location else "?"
    with open(store.blob_path(layer.digest), "rb") as data:
        put = await session.request(
            "PUT", f"{location}{separator}digest={layer.digest}", data=data,
            headers={"Content-Type": "application/octet-stream",
                     "Content-Length": str(layer.size)})
    async with put:
        if put.status not in (201, 204):
            raise RegistryError(f"{session.name.host}: blob upload failed ({put.status})")
    yield {**event, "completed": layer.size}

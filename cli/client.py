"""The CLI's client of corral's HTTP API (Ollama's), at OLLAMA_HOST.

As Ollama's `cmd/` drives the server only through its `api` client, every command here goes
through `Client`: plain JSON calls, and NDJSON streams read one object at a time. Failures
become `CLIError`s with a one-line message (the caller prints "Error: <message>" and exits 1):
an unreachable server, an HTTP error (the server's `{"error": "..."}` text), an error object in
the middle of a stream, or a connection dropped mid-answer.

aiohttp rather than httpx: aiohttp is already one of corral's own dependencies (the server runs
on it), while httpx is present only through the test-only `ollama` package; and its asyncio
streaming lets the REPL cancel an answer on Ctrl-C by cancelling the task that reads it, which
closes the connection so the server stops generating.
"""

from __future__ import annotations

import ipaddress
import os
from typing import Any, AsyncIterator, Mapping

import aiohttp
import orjson

from server.settings import parse_host

# Connecting is quick or it is not happening; an answer may take as long as the model needs.
CONNECT_TIMEOUT = 10.0


class CLIError(Exception):
    """Anything the CLI reports as one line on stderr."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()) or "unknown error")


class APIError(CLIError):
    """The server answered with an HTTP error, or sent `{"error": ...}` in a stream."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class ConnectError(CLIError):
    pass


def base_url(environ: Mapping[str, str] | None = None) -> str:
    """The server's URL from OLLAMA_HOST, read as the server reads it (`parse_host`: host,
    host:port, http(s)://host:port, default port 11434), with a wildcard bind address (0.0.0.0,
    ::) replaced by loopback as Ollama's ConnectableHost does."""
    env = os.environ if environ is None else environ
    raw = env.get("OLLAMA_HOST", "").strip() or "127.0.0.1:11434"
    try:
        host, port = parse_host(raw)
    except ValueError as exc:
        raise CLIError(f"OLLAMA_HOST={raw!r} is invalid: {exc}") from None
    scheme = "https" if raw.lower().startswith("https://") else "http"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        ip = None
    if ip is not None and ip.is_unspecified:
        host = "127.0.0.1" if ip.version == 4 else "::1"
    if ip is not None and ip.version == 6:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


class Client:
    """One session against the server; use as `async with Client() as client:`."""

    def __init__(self, base: str | None = None, api_key: str | None = None) -> None:
        self.base = base or base_url()
        key = os.environ.get("CORRAL_API_KEY", "") if api_key is None else api_key
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> "Client":
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT)
        self._session = aiohttp.ClientSession(
            timeout=timeout, headers={"User-Agent": "corral-cli", "Content-Type": "application/json",
                                       **self._headers})
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use Client as an async context manager"
        return self._session

    # --- plain calls ----------------------------------------------------------------------

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """One request; the decoded JSON answer (None for an empty body)."""
        try:
            async with self.session.request(method, self.base + path,
                                            data=_dump(body)) as resp:
                await _raise_for_status(resp)
                raw = await resp.read()
        except aiohttp.ClientConnectorError:
            raise self._connect_error() from None
        except aiohttp.ClientError as exc:
            raise CLIError(f"{method} {path}: {exc or type(exc).__name__}") from None
        if not raw.strip():
            return None
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise CLIError(f"{method} {path}: the server sent something that is not JSON") from None

    async def heartbeat(self) -> None:
        try:
            async with self.session.head(self.base + "/") as resp:
                await _raise_for_status(resp)
        except aiohttp.ClientConnectorError:
            raise self._connect_error() from None
        except aiohttp.ClientError as exc:
            raise CLIError(f"{self.base}: {exc or type(exc).__name__}") from None

    async def version(self) -> str:
        """The server's corral version (an Ollama server answers only its own: that one)."""
        reply = await self.call("GET", "/api/version") or {}
        return str(reply.get("corral") or reply.get("version", ""))

    async def list(self) -> list[dict[str, Any]]:
        return list((await self.call("GET", "/api/tags") or {}).get("models") or [])

    async def ps(self) -> list[dict[str, Any]]:
        return list((await self.call("GET", "/api/ps") or {}).get("models") or [])

    async def show(self, model: str, **extra: Any) -> dict[str, Any]:
        return await self.call("POST", "/api/show", {"model": model, **extra}) or {}

    async def copy(self, source: str, destination: str) -> None:
        await self.call("POST", "/api/copy", {"source": source, "destination": destination})

    async def delete(self, model: str) -> None:
        await self.call("DELETE", "/api/delete", {"model": model})

    # --- streams --------------------------------------------------------------------------

    async def stream(self, path: str, body: Mapping[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """POSTs `body` (with stream true) and yields each NDJSON object of the answer."""
        try:
            async with self.session.post(self.base + path,
                                         data=_dump({**body, "stream": True})) as resp:
                await _raise_for_status(resp)
                # Split lines ourselves: aiohttp's readline caps a line at twice its read
                # buffer, and a final object carrying `context` can be longer than that.
                pending = bytearray()
                async for chunk in resp.content.iter_any():
                    pending += chunk
                    while (end := pending.find(b"\n")) >= 0:
                        line = bytes(pending[:end])
                        del pending[:end + 1]
                        if (event := _event(line, path, resp.status)) is not None:
                            yield event
                if (event := _event(bytes(pending), path, resp.status)) is not None:
                    yield event
        except aiohttp.ClientConnectorError:
            raise self._connect_error() from None
        except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
            raise CLIError(f"the server closed the connection mid-answer ({exc or type(exc).__name__})") \
                from None
        except aiohttp.ClientError as exc:
            raise CLIError(f"POST {path}: {exc or type(exc).__name__}") from None

    def generate(self, body: Mapping[str, Any]) -> AsyncIterator[dict[str, Any]]:
        return self.stream("/api/generate", body)

    def chat(self, body: Mapping[str, Any]) -> AsyncIterator[dict[str, Any]]:
        return self.stream("/api/chat", body)

    def create(self, body: Mapping[str, Any]) -> AsyncIterator[dict[str, Any]]:
        return self.stream("/api/create", body)

    def pull(self, body: Mapping[str, Any]) -> AsyncIterator[dict[str, Any]]:
        return self.stream("/api/pull", body)

    def push(self, body: Mapping[str, Any]) -> AsyncIterator[dict[str, Any]]:
        return self.stream("/api/push", body)

    def _connect_error(self) -> ConnectError:
        return ConnectError(f"could not connect to corral server at {self.base}, "
                            "run 'corral serve' to start it")


def _event(line: bytes, path: str, status: int) -> dict[str, Any] | None:
    """One NDJSON line of a stream: its object, None for a blank line; an error object raises."""
    if not line.strip():
        return None
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError:
        raise CLIError(f"POST {path}: the server sent a line that is not JSON") from None
    if not isinstance(event, dict):
        return None
    if event.get("error"):
        raise APIError(str(event["error"]), status)
    return event


def _dump(body: Any) -> bytes | None:
    return None if body is None else orjson.dumps(body)


async def _raise_for_status(resp: aiohttp.ClientResponse) -> None:
    if resp.status < 400:
        return
    raw = await resp.read()
    message = ""
    try:
        decoded = orjson.loads(raw)
        if isinstance(decoded, dict):
            error = decoded.get("error")
            message = error.get("message", "") if isinstance(error, dict) else str(error or "")
    except orjson.JSONDecodeError:
        message = raw.decode("utf-8", "replace").strip()[:300]
    if not message:
        message = f"{resp.status} {resp.reason or ''}".strip()
    if resp.status == 401 and "CORRAL_API_KEY" not in message:
        message += " (set CORRAL_API_KEY to the server's API key)"
    raise APIError(message, resp.status)

"""Who may call the API: browser origins (CORS), Host names (DNS rebinding) and API keys.

Origins and Host names follow Ollama (envconfig.AllowedOrigins, allowedHostsMiddleware,
gin-contrib/cors), so a web page cannot drive a local server; API keys are corral's own. The
middlewares answer refusals themselves, in front of `error_middleware`, so a refused request
never reaches a handler.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import socket
from pathlib import Path
from typing import Awaitable, Callable

import psutil
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from server.errors import json_error
from server.settings import Settings, SettingsError

log = logging.getLogger("corral.security")

_LOCAL_HOSTS = ("localhost", "127.0.0.1", "0.0.0.0")
DEFAULT_ORIGINS: tuple[str, ...] = (
    *(f"{scheme}://{host}{port}" for host in _LOCAL_HOSTS for port in ("", ":*")
      for scheme in ("http", "https")),
    "app://*", "file://*", "tauri://*", "vscode-webview://*", "vscode-file://*",
    # gin-contrib/cors AllowBrowserExtensions, which Ollama turns on.
    "chrome-extension://*", "moz-extension://*", "safari-web-extension://*",
)

_PREFLIGHT_HEADERS = {
    "Access-Control-Allow-Methods": "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS",
    "Access-Control-Allow-Headers": ", ".join((
        "Authorization", "Content-Type", "User-Agent", "Accept", "X-Requested-With", "OpenAI-Beta",
        "x-stainless-arch", "x-stainless-async", "x-stainless-custom-poll-interval",
        "x-stainless-helper-method", "x-stainless-lang", "x-stainless-os",
        "x-stainless-package-version", "x-stainless-poll-helper", "x-stainless-retry-count",
        "x-stainless-runtime", "x-stainless-runtime-version", "x-stainless-timeout")),
    "Access-Control-Max-Age": "43200",  # 12 hours, as Ollama
}

# Host names that only ever resolve to this machine or the local network.
_LOCAL_SUFFIXES = (".localhost", ".local", ".internal")


def middlewares(settings: Settings) -> list[Middleware]:
    """Origin (CORS), then Host, then API key checks; `install` adds what they need on the app."""
    checks = [_origin_middleware(Origins(settings.origins))]
    if _is_loopback(settings.host):  # bound elsewhere, the server is meant to be reached by name
        checks.append(_host_middleware())
    return [*checks, _api_key_middleware]


def install(app: web.Application, settings: Settings) -> None:
    """Stores the API keys (read now, so an unreadable key file stops the start) and adds CORS
    headers as each response is prepared, which is the only moment a streamed one can get them."""
    app[API_KEYS] = ApiKeys(settings)
    app.on_response_prepare.append(_cors_headers(Origins(settings.origins)))


# --- origins -----------------------------------------------------------------------------------

class Origins:
    """The browser origins allowed to call the API: OLLAMA_ORIGINS plus Ollama's defaults."""

    def __init__(self, extra: tuple[str, ...]) -> None:
        self._rules = [rule.lower() for rule in (*extra, *DEFAULT_ORIGINS)]

    def allows(self, origin: str) -> bool:
        origin = origin.lower()
        return any(_matches(rule, origin) for rule in self._rules)


def _matches(rule: str, origin: str) -> bool:
    """One `*` per rule, as gin-contrib/cors: it stands for anything between what precedes and
    what follows it, so a lone `*` allows every origin."""
    prefix, star, suffix = rule.partition("*")
    if not star:
        return origin == rule
    return (len(origin) >= len(prefix) + len(suffix) and origin.startswith(prefix)
            and origin.endswith(suffix))


def _cross_origin(request: web.Request) -> str | None:
    """The request's Origin when it is another site's; None for same-origin or non-browser calls."""
    origin = request.headers.get("Origin", "")
    host = request.headers.get("Host", "")
    if not origin or origin in (f"http://{host}", f"https://{host}"):
        return None
    return origin


def _origin_middleware(origins: Origins) -> Middleware:
    @web.middleware
    async def check_origin(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = _cross_origin(request)
        if origin is None:
            return await handler(request)
        if not origins.allows(origin):
            # Refused before the handler: a "simple" cross-site POST would otherwise run.
            return json_error(request.path, 403, "origin not allowed")
        if request.method == "OPTIONS":
            return web.Response(status=204, headers=_PREFLIGHT_HEADERS)
        return await handler(request)

    return check_origin


def _cors_headers(origins: Origins) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    async def add(request: web.Request, response: web.StreamResponse) -> None:
        origin = _cross_origin(request)
        if origin is not None and origins.allows(origin):
            response.headers["Access-Control-Allow-Origin"] = origin
            vary = response.headers.get("Vary")
            if vary is None:
                response.headers["Vary"] = "Origin"
            elif "origin" not in (name.strip().lower() for name in vary.split(",")):
                response.headers["Vary"] = f"{vary}, Origin"

    return add


# --- Host names --------------------------------------------------------------------------------

def _host_middleware() -> Middleware:
    """Against DNS rebinding: a server on loopback only answers names that mean this machine."""
    hostname = socket.gethostname().lower()

    @web.middleware
    async def check_host(request: web.Request, handler: Handler) -> web.StreamResponse:
        if _local_host(_strip_port(request.headers.get("Host", "")).lower(), hostname):
            return await handler(request)
        return json_error(request.path, 403, "host not allowed")

    return check_host


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _strip_port(host: str) -> str:
    if host.startswith("["):  # [v6] or [v6]:port
        return host[1:].partition("]")[0]
    if host.count(":") == 1:  # name:port or v4:port; a bare v6 address has several colons
        return host.partition(":")[0]
    return host


def _local_host(host: str, hostname: str) -> bool:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return host in ("", "localhost", hostname) or host.endswith(_LOCAL_SUFFIXES)
    return ip.is_loopback or ip.is_private or ip.is_unspecified or ip in _interface_addresses()


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _interface_addresses() -> set[IPAddress]:
    """This machine's own addresses, read per call: interfaces come and go (DHCP, VPNs)."""
    found: set[IPAddress] = set()
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if address.family in (socket.AF_INET, socket.AF_INET6):
                try:
                    found.add(ipaddress.ip_address(address.address))
                except ValueError:
                    continue
    return found


# --- API keys ----------------------------------------------------------------------------------

class ApiKeys:
    """The accepted bearer keys: CORRAL_API_KEY plus the lines of CORRAL_API_KEY_FILE."""

    def __init__(self, settings: Settings) -> None:
        self._key = settings.api_key
        self._file = settings.api_key_file
        self._keys = self._read()

    @property
    def required(self) -> bool:
        """Whether a key is needed; a configured but empty key file still locks the server."""
        return bool(self._key) or self._file is not None

    def accepts(self, token: str) -> bool:
        given = token.encode("utf-8", "surrogateescape")
        matched = False
        for key in self._keys:  # every key, always: the time taken says nothing about which
            matched |= hmac.compare_digest(given, key)
        return matched

    def reload(self) -> None:
        """Re-reads the key file (on SIGHUP); if it cannot be read, the old keys stay."""
        try:
            self._keys = self._read()
        except SettingsError as exc:
            log.error("%s; keeping the previous API keys", exc)
            return
        log.info("API keys reloaded: %d accepted", len(self._keys))

    def _read(self) -> list[bytes]:
        keys = [self._key] if self._key else []
        if self._file is not None:
            keys += _read_key_file(self._file)
        return [key.encode("utf-8", "surrogateescape") for key in keys]


def _read_key_file(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise SettingsError(f"CORRAL_API_KEY_FILE={str(path)!r} cannot be read: {reason}") from None
    keys = [line.strip() for line in text.splitlines()]
    keys = [key for key in keys if key and not key.startswith("#")]
    if not keys:
        log.warning("%s holds no API keys: every request but GET / will be refused", path)
    return keys


API_KEYS = web.AppKey("api_keys", ApiKeys)


@web.middleware
async def _api_key_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    keys = request.app[API_KEYS]
    open_path = request.path == "/" and request.method in ("GET", "HEAD")  # the liveness probe
    if not keys.required or open_path or keys.accepts(_bearer_token(request)):
        return await handler(request)
    response = json_error(request.path, 401, "unauthorized", code="invalid_api_key")
    response.headers["WWW-Authenticate"] = "Bearer"
    return response


def _bearer_token(request: web.Request) -> str:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""

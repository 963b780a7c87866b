"""Anthropic's error shape: `{"type": "error", "error": {"type", "message"}}`, which its SDKs
turn into their exception classes (by status before a stream, from an `error` event after).

A leaf module (no imports from the server) so that server/errors.py can use it for every
answer under /v1/messages, the refusals of the security middlewares included."""

from __future__ import annotations

from typing import Any

PATH = "/v1/messages"

# Ollama's anthropic.NewError, status by status; anything else is an `api_error`.
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
          404: "not_found_error", 429: "rate_limit_error", 503: "overloaded_error",
          529: "overloaded_error"}


def is_anthropic(path: str) -> bool:
    return path == PATH or path.startswith(PATH + "/")


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": _TYPES.get(status, "api_error"),
                                       "message": message}}

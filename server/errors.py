"""Internal errors and the one place that turns them into HTTP answers.

Handlers raise `APIError` subclasses (scheduler and worker failures are mapped to them here too)
or let the store's own errors through; `error_middleware` writes `{"error": "..."}` with the
matching status. Anything unexpected becomes a 500 with its message, and the server carries on.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import Any, Iterator

import orjson
from aiohttp import web

from scheduler.errors import JobFailed, QueueFull, SchedulerError
from server.accesslog import CLIENT_GONE
from server.anthropic.errors import error_body as anthropic_error, is_anthropic
from store import errors as store_errors

log = logging.getLogger("corral.http")


class APIError(Exception):
    status = 500

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status


class BadRequest(APIError):
    status = 400


class NotFound(APIError):
    status = 404


class ServerBusy(APIError):
    status = 503

    def __init__(self) -> None:
        super().__init__("server busy, please try again.  maximum pending requests exceeded")


class WorkerError(APIError):
    """The model runner failed (crash, load failure); the server itself is fine."""

    status = 500


@contextmanager
def scheduler_errors() -> Iterator[None]:
    """Maps scheduler and job failures to API errors (503 when the queue is full, 400 for a job
    the worker refused as the request's fault)."""
    try:
        yield
    except QueueFull:
        raise ServerBusy() from None
    except JobFailed as exc:
        raise (BadRequest if exc.bad_request else WorkerError)(exc.message) from None
    except SchedulerError as exc:
        raise WorkerError(str(exc)) from None


OPENAI_PREFIX = "/v1/"
_OPENAI_TYPES = {400: "invalid_request_error", 401: "invalid_request_error",
                 403: "invalid_request_error", 404: "not_found_error"}


def json_error(path: str, status: int, message: str, code: str | None = None) -> web.Response:
    """An error in the shape of the API being called: `{"error": "..."}` for Ollama's,
    Anthropic's `{"type": "error", "error": {"type", "message"}}` under /v1/messages, and
    OpenAI's `{"error": {"message", "type", "param", "code"}}` elsewhere under /v1/ (their SDKs
    read these)."""
    body: dict[str, Any] = {"error": message}
    if is_anthropic(path):
        body = anthropic_error(status, message)
    elif path.startswith(OPENAI_PREFIX):
        body = {"error": {"message": message, "type": _OPENAI_TYPES.get(status, "api_error"),
                          "param": None, "code": code}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


@web.middleware
async def error_middleware(request: web.Request, handler):  # type: ignore[no-untyped-def]
    try:
        return await handler(request)
    except APIError as exc:
        return json_error(request.path, exc.status, exc.message)
    except store_errors.InvalidInput as exc:
        return json_error(request.path, 400, str(exc))
    except store_errors.NotFound as exc:
        return json_error(request.path, 404, str(exc))
    except store_errors.RegistryError as exc:
        return json_error(request.path, 502, str(exc))
    except store_errors.NoSpace as exc:
        return json_error(request.path, 507, str(exc))  # the disk's state, not a fault of ours
    except ConnectionResetError:
        # The client is gone (mid-body or mid-stream): nobody reads this answer, and raising
        # would have aiohttp log a traceback at ERROR for every client that hangs up.
        return web.Response(status=CLIENT_GONE)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_error(request.path, exc.status, exc.reason.lower())
    except Exception as exc:  # noqa: BLE001 - last line of defence; the server must stay up
        log.exception("unhandled error on %s %s", request.method, request.path)
        return json_error(request.path, 500, str(exc) or type(exc).__name__)


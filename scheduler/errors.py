"""The scheduler's failures, as the front end maps them to HTTP (server/errors.py)."""

from __future__ import annotations


class SchedulerError(RuntimeError):
    """A failure to report as HTTP 500 (load failure, crashed worker, a model that fits nowhere)."""


class FitsNowhere(SchedulerError):
    """No device, split or offload could ever hold the model: the message names what is free."""


class QueueFull(RuntimeError):
    """More requests wait than OLLAMA_MAX_QUEUE allows (HTTP 503)."""


class JobFailed(RuntimeError):
    """The worker ended a job with an error: the request's fault (`bad_request`: HTTP 400, e.g.
    an input too long) or the worker's (HTTP 500)."""

    def __init__(self, message: str, bad_request: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.bad_request = bad_request

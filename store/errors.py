"""The store's own failures; `server/errors.py` maps them to HTTP status codes once.

`InvalidInput` is the caller's fault (a 400), `NotFound` names something the store does not hold
(a 404). Anything else raised from here is a fault of the server.
"""

from __future__ import annotations


class StoreError(Exception):
    pass


class InvalidInput(StoreError, ValueError):
    pass


class NotFound(StoreError):
    pass


class InvalidName(InvalidInput):
    pass


class InvalidDigest(InvalidInput):
    pass


class DigestMismatch(InvalidInput):
    pass


class NotGGUF(InvalidInput):
    pass


class InvalidManifest(StoreError):
    """A manifest, or the config blob it names, that Ollama could not read as one: refused on the
    way in (a pull), skipped by listings, still deletable."""


class NoSpace(StoreError):
    """The disk cannot hold what a pull needs, or filled up during it."""


class RegistryError(StoreError):
    """A registry refused or failed (401/403, 5xx, a broken connection): not the caller's fault
    and not ours; the server answers 502."""


def model_not_found(name: str) -> NotFound:
    return NotFound(f'model "{name}" not found, try pulling it first')

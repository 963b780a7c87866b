"""Model blobs on a cluster node that does not share the front end's store.

The front end's store keeps blobs as `blobs/sha256-<hex>`; a `Load` names such a path. A node
that has the path (a shared filesystem) reads it there. Otherwise its worker fetches the blob
once, by digest, from a `BlobSource` beside the front end's store into the node's cache, and
keeps it only when its sha256 matches: a damaged transfer never becomes a model.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
from pathlib import Path
from typing import Callable

CHUNK = 32 << 20  # bytes per read: large enough to stream, small enough for the object store
_BLOB_NAME = re.compile(r"sha256-([0-9a-f]{64})")

Read = Callable[[int, int], bytes]  # (offset, length) -> bytes; short only at the end


def digest_of(path: str) -> str:
    """"…/blobs/sha256-<hex>" -> "sha256:<hex>"; ValueError for a path that names no blob."""
    match = _BLOB_NAME.fullmatch(Path(path).name)
    if match is None:
        raise ValueError(f"{path} is not on this node and names no blob to fetch")
    return f"sha256:{match.group(1)}"


def fetch_blob(read: Read, digest: str, cache_dir: Path) -> Path:
    """The blob's file in `cache_dir`, fetched through `read` unless it is there already.

    A lock per blob makes the node's other workers wait for the one fetching it instead of
    fetching it again; the bytes are hashed as they arrive and renamed into place only when
    the digest matches."""
    target = cache_dir / digest.replace(":", "-")
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / f"{target.name}.lock", "wb") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if target.is_file():
            return target
        partial = cache_dir / f"{target.name}.partial"
        hasher = hashlib.sha256()
        with open(partial, "wb") as out:
            offset = 0
            while True:
                data = read(offset, CHUNK)
                out.write(data)
                hasher.update(data)
                offset += len(data)
                if len(data) < CHUNK:
                    break
            out.flush()
            os.fsync(out.fileno())  # a crash must not leave a short file under the final name
        if f"sha256:{hasher.hexdigest()}" != digest:
            partial.unlink()
            raise ValueError(f"blob {digest} arrived damaged (its bytes hash to "
                             f"sha256:{hasher.hexdigest()})")
        os.replace(partial, target)
    return target


class BlobSource:
    """Serves the front end's blobs by digest; runs as a Ray actor on the front end's node."""

    def __init__(self, blobs_dir: str) -> None:
        self._dir = Path(blobs_dir)

    def read(self, digest: str, offset: int, length: int) -> bytes:
        name = digest.replace(":", "-")
        if _BLOB_NAME.fullmatch(name) is None:  # a digest, never a path
            raise ValueError(f"not a blob digest: {digest!r}")
        with open(self._dir / name, "rb") as blob:
            blob.seek(offset)
            return blob.read(length)

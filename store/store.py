"""The model store, in Ollama's on-disk layout.

    $OLLAMA_MODELS/blobs/sha256-<hex>                       content-addressed layers
    $OLLAMA_MODELS/manifests/<host>/<namespace>/<model>/<tag> one manifest per model name

A blob only appears under its final name after its digest was checked; manifests are written to
a temp file, fsynced and renamed, so a crash leaves the old version or the new one, never half.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from collections import Counter
from contextlib import contextmanager
from typing import Any, Hashable, Iterable, Iterator

import orjson

from store.errors import DigestMismatch, InvalidDigest
from store.names import ModelName, parse_name

MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
CONFIG_MEDIA_TYPE = "application/vnd.docker.container.image.v1+json"
MODEL_MEDIA = "application/vnd.ollama.image.model"
TEMPLATE_MEDIA = "application/vnd.ollama.image.template"
SYSTEM_MEDIA = "application/vnd.ollama.image.system"
PARAMS_MEDIA = "application/vnd.ollama.image.params"
LICENSE_MEDIA = "application/vnd.ollama.image.license"
MESSAGES_MEDIA = "application/vnd.ollama.image.messages"
ADAPTER_MEDIA = "application/vnd.ollama.image.adapter"

_DIGEST = re.compile(r"^sha256[:-]([0-9a-f]{64})$")
_ANY_DIGEST = re.compile(rb"sha256[:-]([0-9a-f]{64})")


def normalize_digest(digest: str) -> str:
    """`sha256:<hex>` (Ollama also writes `sha256-<hex>`); anything else is refused."""
    match = _DIGEST.match(digest) if isinstance(digest, str) else None
    if not match:
        raise InvalidDigest(f"invalid digest format: {digest!r}")
    return f"sha256:{match.group(1)}"


@dataclass(frozen=True, slots=True)
class Layer:
    media_type: str
    digest: str
    size: int

    def to_json(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": self.size}


@dataclass(frozen=True, slots=True)
class Manifest:
    config: Layer
    layers: tuple[Layer, ...]
    digest: str  # sha256 of the manifest file's bytes, what /api/tags shows
    modified_at: datetime

    @property
    def size(self) -> int:
        return self.config.size + sum(layer.size for layer in self.layers)

    def layer(self, media_type: str) -> Layer | None:
        return next((lay for lay in self.layers if lay.media_type == media_type), None)


class BlobWriter:
    """Streams a blob to a temp file while hashing; `commit` renames it only on a digest match.

    With `resume`, the temp file is that named file, which outlives an `abort` so a later try
    (a pull after a dropped connection or a restart) goes on from what it holds."""

    def __init__(self, store: "Store", expected: str | None, resume: Path | None = None) -> None:
        self._store = store
        self._expected = expected
        self._hash = hashlib.sha256()
        self.size = 0
        self._resumable = resume is not None
        if resume is None:
            fd, name = tempfile.mkstemp(dir=store.blobs_dir, prefix=".partial-")
            self._file = os.fdopen(fd, "wb")
            self._tmp = Path(name)
            return
        self._tmp = resume
        self._file = open(resume, "ab")
        with open(resume, "rb") as earlier:  # what an earlier try left counts
            while block := earlier.read(1 << 20):
                self._hash.update(block)
                self.size += len(block)

    def restart(self) -> None:
        """Drops what an earlier try left (the source could not go on from it)."""
        self._file.truncate(0)
        self._hash = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> None:
        self._hash.update(data)
        self._file.write(data)
        self.size += len(data)

    def commit(self) -> Layer:
        """Returns the blob as a layer (media type left to the caller) or raises DigestMismatch."""
        digest = f"sha256:{self._hash.hexdigest()}"
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            if self._expected is not None and digest != self._expected:
                raise DigestMismatch(f"digest mismatch, expected {self._expected!r}, got {digest!r}")
            os.replace(self._tmp, self._store.blob_path(digest))
        finally:
            self._tmp.unlink(missing_ok=True)
        return Layer("", digest, self.size)

    def abort(self) -> None:
        self._file.close()
        if not self._resumable:
            self._tmp.unlink(missing_ok=True)


class Store:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs_dir = root / "blobs"
        self.manifests_dir = root / "manifests"
        self.blobs_dir.mkdir(parents=True, exist_ok=True)
        self.manifests_dir.mkdir(parents=True, exist_ok=True)
        # Blobs a create in progress has chosen but not yet written into a manifest: a delete
        # must not prune them meanwhile. Counted, since two creates may pin the same blob.
        self._pins: Counter[str] = Counter()
        self._pins_lock = threading.Lock()
        # Bumped after every manifest this process writes or removes, so that what is derived
        # from the listing (the /api/tags body) is rebuilt at once. Writes run on threads.
        self.generation = 0
        self._generation_lock = threading.Lock()

    @contextmanager
    def pinned(self, digests: Iterable[str]) -> Iterator[None]:
        """Keeps these blobs from being pruned for as long as the block runs."""
        held = [normalize_digest(d) for d in digests]
        with self._pins_lock:
            self._pins.update(held)
        try:
            yield
        finally:
            with self._pins_lock:
                self._pins.subtract(held)
                self._pins += Counter()  # drop the zero counts

    def sweep_partials(self) -> int:
        """Removes upload temp files a killed server left behind (run once at start, when no
        upload can be in progress); returns how many."""
        stale = list(self.blobs_dir.glob(".partial-*"))
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)

    # ---- blobs ---------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.blobs_dir / normalize_digest(digest).replace(":", "-")

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def blob_writer(self, expected: str | None = None, resume: Path | None = None) -> BlobWriter:
        return BlobWriter(self, None if expected is None else normalize_digest(expected), resume)

    def add_blob_bytes(self, data: bytes, media_type: str) -> Layer:
        digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
        if not self.has_blob(digest):
            writer = self.blob_writer(digest)
            writer.write(data)
            writer.commit()
        return Layer(media_type, digest, len(data))

    def add_blob_file(self, source: Path, expected: str | None = None) -> str:
        """Copies a local file into the store (verified); returns its digest."""
        if expected is not None and self.has_blob(expected):
            return normalize_digest(expected)
        writer = self.blob_writer(expected)
        try:
            with open(source, "rb") as f:
                while chunk := f.read(1 << 20):
                    writer.write(chunk)
        except BaseException:
            writer.abort()
            raise
        return writer.commit().digest

    def read_blob(self, digest: str) -> bytes:
        return self.blob_path(digest).read_bytes()

    # ---- manifests -----------------------------------------------------------------------

    def manifest_path(self, name: ModelName) -> Path:
        """Where the name's manifest is, matching an existing one case-insensitively (as Ollama
        does, so `Gemma3:270M` finds `gemma3:270m` and never becomes a second copy)."""
        path = self.manifests_dir
        for part in name.parts:
            exact = path / part
            if not exact.exists() and path.is_dir():
                folded = part.casefold()
                exact = next((p for p in path.iterdir() if p.name.casefold() == folded), exact)
            path = exact
        return path

    def read_manifest(self, name: ModelName) -> Manifest | None:
        path = self.manifest_path(name)
        try:
            data = path.read_bytes()
            stat = path.stat()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        doc = orjson.loads(data)
        return Manifest(
            config=_layer(doc["config"]),
            layers=tuple(_layer(lay) for lay in doc.get("layers", [])),
            digest=hashlib.sha256(data).hexdigest(),
            modified_at=datetime.fromtimestamp(stat.st_mtime, timezone.utc),
        )

    def write_manifest(self, name: ModelName, config: Layer, layers: list[Layer]) -> None:
        doc = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": config.to_json(),
            "layers": [layer.to_json() for layer in layers],
        }
        self.write_manifest_bytes(name, orjson.dumps(doc))

    def write_manifest_bytes(self, name: ModelName, data: bytes) -> None:
        """Every manifest this process writes goes through here (create, pull, copy)."""
        atomic_write(self.manifest_path(name), data)
        self._changed()

    def copy_manifest(self, source: ModelName, destination: ModelName) -> bool:
        """Gives the source's manifest a second name; False if the source does not exist."""
        if self.read_manifest(source) is None:
            return False
        self.write_manifest_bytes(destination, self.manifest_path(source).read_bytes())
        return True

    def delete_manifest(self, name: ModelName) -> Manifest | None:
        """Removes the name, then every blob of it that no other manifest still uses."""
        manifest = self.read_manifest(name)
        if manifest is None:
            return None
        path = self.manifest_path(name)
        path.unlink()
        self._changed()
        for parent in path.parents:  # tidy empty folders up to manifests/
            if parent == self.manifests_dir:
                break
            try:
                parent.rmdir()
            except OSError:
                break
        with self._pins_lock:
            still_used = self._referenced_digests() | set(self._pins)
        for lay in (manifest.config, *manifest.layers):
            if lay.digest not in still_used:
                self.blob_path(lay.digest).unlink(missing_ok=True)
        return manifest

    def remove_if_unused(self, digest: str) -> None:
        """Deletes a blob that no manifest names (e.g. the F16 source of a quantized model)."""
        with self._pins_lock:
            if normalize_digest(digest) in self._referenced_digests() | set(self._pins):
                return
        self.blob_path(digest).unlink(missing_ok=True)

    def _referenced_digests(self) -> set[str]:
        """Every digest any file under manifests/ mentions. Read as text, not parsed: a manifest
        we cannot read (damaged, or written by a newer Ollama) must still protect its blobs in a
        store we share."""
        used: set[str] = set()
        for path in self.manifests_dir.rglob("*"):
            if path.is_file():
                used.update(f"sha256:{h.decode()}" for h in _ANY_DIGEST.findall(path.read_bytes()))
        return used

    def _changed(self) -> None:
        with self._generation_lock:
            self.generation += 1

    def fingerprint(self) -> Hashable:
        """Changes whenever another process (an Ollama user copying files in by hand) adds,
        replaces, edits or removes a manifest, or adds a blob (a config blob that arrives after
        its manifest changes that model's details). A stat per manifest and a listing of blobs:
        cheap enough to check every second, where re-reading every manifest and config is not."""
        manifests = []
        for path in self.manifests_dir.glob("*/*/*/*"):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue  # removed while we looked
            manifests.append((str(path), stat.st_ino, stat.st_size, stat.st_mtime_ns))
        # Names, not the folder's mtime: that ticks too coarsely to tell two blobs apart.
        blobs = {name for name in os.listdir(self.blobs_dir) if not name.startswith(".")}
        return frozenset(manifests), frozenset(blobs)

    def list_manifests(self) -> Iterator[tuple[ModelName, Manifest]]:
        for path in sorted(self.manifests_dir.glob("*/*/*/*")):
            if not path.is_file() or path.name.startswith("."):
                continue
            try:
                name = parse_name("/".join(path.relative_to(self.manifests_dir).parts[:3])
                                  + ":" + path.name)
                manifest = self.read_manifest(name)
            except (ValueError, KeyError):
                continue  # a foreign or damaged file is skipped, not fatal
            if manifest is not None:
                yield name, manifest


def _layer(doc: dict[str, Any]) -> Layer:
    return Layer(doc["mediaType"], normalize_digest(doc["digest"]), int(doc["size"]))


def atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

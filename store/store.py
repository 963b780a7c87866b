"""The model store, in Ollama's on-disk layout.

    $OLLAMA_MODELS/blobs/sha256-<hex>                       content-addressed layers
    $OLLAMA_MODELS/manifests/<host>/<namespace>/<model>/<tag> one manifest per model name

A blob only appears under its final name after its digest was checked; manifests are written to
a temp file, fsynced and renamed, so a crash leaves the old version or the new one, never half.
A manifest is checked whole before it is written (`parse_manifest`); one that fails the check on
reading (copied in by hand, or left by an older corral) is skipped and logged, never fatal, and a
delete still removes it. Besides blobs, `blobs/` holds what unfinished transfers leave: upload temp
files (`.partial-*`), downloads (`.download-<hex>` and their companions, store/download.py) and the
record of which blobs a pull started (`.pull-*`), for a delete of a pull that failed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from collections import Counter
from contextlib import contextmanager
from typing import Any, Hashable, Iterable, Iterator

import orjson

from store.errors import DigestMismatch, InvalidDigest, InvalidManifest, InvalidName, NoSpace
from store.names import ModelName, parse_name

log = logging.getLogger("corral.store")

MANIFEST_MEDIA_TYPE = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.docker.container.image.v1+json"
MODEL_MEDIA = "application/vnd.ollama.image.model"
TEMPLATE_MEDIA = "application/vnd.ollama.image.template"
SYSTEM_MEDIA = "application/vnd.ollama.image.system"
PARAMS_MEDIA = "application/vnd.ollama.image.params"
LICENSE_MEDIA = "application/vnd.ollama.image.license"
MESSAGES_MEDIA = "application/vnd.ollama.image.messages"
ADAPTER_MEDIA = "application/vnd.ollama.image.adapter"
PROJECTOR_MEDIA = "application/vnd.ollama.image.projector"  # a vision (mmproj) GGUF
DRAFT_MEDIA = "application/vnd.ollama.image.draft"  # a draft model for speculative decoding

MAX_MANIFEST_BYTES = 4 << 20  # Ollama's are about 1 KB; each is read whole, by every listing
MAX_CONFIG_BYTES = 1 << 20  # Ollama's config blobs are under 1 KB; also read whole by listings
MAX_BLOB_BYTES = (1 << 63) - 1  # Ollama reads a size as a Go int64; larger breaks it on a shared store
PARTIAL_EXPIRY_S = 24 * 3600  # a download untouched a day is abandoned; a recent one is resumed
BLOB_MODE = 0o600  # what mkstemp gives every blob BlobWriter writes: the server's user's alone

UPLOAD_PREFIX = ".partial-"  # an upload's temp file in blobs/, never resumed
DOWNLOAD_PREFIX = ".download-"  # a download's partial file in blobs/, and its companions
PULL_RECORD_PREFIX = ".pull-"  # the blobs a pull started, until it succeeds
CONVERT_PREFIX = ".convert-"  # a folder a create converts a safetensors model in

# The config fields corral shows (store.model.details), typed as Ollama's ConfigV2 has them; a
# null reads as empty there.
_CONFIG_STRINGS = ("model_format", "model_family", "model_type", "file_type", "parent_model")
_CONFIG_STRING_LISTS = ("model_families",)

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
    def __init__(self, root: Path, prune: bool = True) -> None:
        """`prune`: whether a pull or create that replaces a model's manifest removes the blobs
        only the old one named (OLLAMA_NOPRUNE turns it off, as in Ollama)."""
        self.root = root
        self.prunes = prune
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
        """Removes what unfinished transfers left in blobs/ (run once at start): every upload temp
        file and conversion folder (no upload or create can be in progress then), and downloads
        and pull records untouched for PARTIAL_EXPIRY_S (a recent download is what the next pull
        resumes from). A download and its companions go together, by the newest of them. Returns
        how many files went."""
        stale: list[Path] = []
        groups: dict[str, list[Path]] = {}
        for path in self.blobs_dir.iterdir():
            if path.name.startswith(CONVERT_PREFIX):
                shutil.rmtree(path, ignore_errors=True)  # no create can be running then
            elif path.name.startswith(UPLOAD_PREFIX):
                stale.append(path)
            elif path.name.startswith((DOWNLOAD_PREFIX, PULL_RECORD_PREFIX)):
                groups.setdefault(path.name.split(".")[1], []).append(path)
        expired = time.time() - PARTIAL_EXPIRY_S
        for group in groups.values():
            if max(map(_mtime, group)) < expired:
                stale.extend(group)
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)

    def ensure_room(self, layers: Iterable[Layer]) -> None:
        """Refuses a pull the disk cannot hold, before it writes anything: the declared sizes of
        the blobs not here yet, less what their partial downloads hold, against the free space."""
        missing = {lay.digest: lay.size for lay in layers if not self.has_blob(lay.digest)}
        needed = sum(max(0, size - _allocated(self.partial_download(digest)))
                     for digest, size in missing.items())
        free = shutil.disk_usage(self.blobs_dir).free
        if needed > free:
            raise NoSpace(f"not enough space in {self.root} to pull this model: it needs "
                          f"{needed} bytes more and {free} bytes are free")

    def record_pull(self, name: ModelName, layers: Iterable[Layer]) -> None:
        """Notes the blobs a pull of the name fetches, before it writes any: if it fails, its
        manifest never was, and a delete of the name removes what it left by this record."""
        digests = sorted({lay.digest for lay in layers})
        write_private(self._pull_record(name), orjson.dumps({"digests": digests}))

    def forget_pull(self, name: ModelName) -> None:
        """Drops the record of a pull that succeeded, or failed leaving nothing behind."""
        self._pull_record(name).unlink(missing_ok=True)

    def _pull_record(self, name: ModelName) -> Path:
        # Keyed by the name folded as manifest_path matches it; hashed, as a name holds ':'.
        key = hashlib.sha256("/".join(name.parts).casefold().encode()).hexdigest()
        return self.blobs_dir / f"{PULL_RECORD_PREFIX}{key}"

    # ---- blobs ---------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.blobs_dir / normalize_digest(digest).replace(":", "-")

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def partial_download(self, digest: str) -> Path:
        """Where a download gathers a blob's bytes until its digest matched (store/download.py);
        its companion files share this name, with a suffix."""
        return self.blobs_dir / f"{DOWNLOAD_PREFIX}{normalize_digest(digest)[7:]}"

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
        """The name's manifest; None if there is none, or if it is damaged (logged): then it is
        not listed either, a pull or create writes it anew, and a delete removes it."""
        path = self.manifest_path(name)
        try:
            return self._load_manifest(path)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None
        except InvalidManifest as exc:
            log.warning("ignoring the damaged manifest %s: %s", path, exc)
            return None

    def _load_manifest(self, path: Path) -> Manifest:
        """The manifest in the file, and its config blob if present, checked; else
        InvalidManifest. A file past MAX_MANIFEST_BYTES is not read at all."""
        with open(path, "rb") as f:
            stat = os.fstat(f.fileno())
            if stat.st_size > MAX_MANIFEST_BYTES:
                raise InvalidManifest(f"larger than {MAX_MANIFEST_BYTES} bytes")
            data = f.read()
        config, layers = parse_manifest(data)
        try:
            with open(self.blob_path(config.digest), "rb") as f:
                parse_config(f.read(MAX_CONFIG_BYTES + 1))
        except FileNotFoundError:
            pass  # not here (yet): the model shows no details
        except InvalidManifest as exc:
            raise InvalidManifest(f"its config blob: {exc}") from None
        return Manifest(config=config, layers=layers, digest=hashlib.sha256(data).hexdigest(),
                        modified_at=datetime.fromtimestamp(stat.st_mtime, timezone.utc))

    def write_manifest(self, name: ModelName, config: Layer, layers: list[Layer]) -> set[str]:
        doc = {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": config.to_json(),
            "layers": [layer.to_json() for layer in layers],
        }
        return self.write_manifest_bytes(name, orjson.dumps(doc))

    def write_manifest_bytes(self, name: ModelName, data: bytes) -> set[str]:
        """Every manifest this process writes goes through here (create, pull, copy), checked
        first: none that listings would have to skip is written. Returns the digests the name's
        previous manifest named and this one does not (what `prune` may remove)."""
        parse_manifest(data)
        path = self.manifest_path(name)
        before = _digests_named(path) if path.is_file() else set()
        atomic_write(path, data)
        self._changed()
        return before - _digests_in(data)

    def prune(self, digests: set[str]) -> None:
        """After a pull or create replaced a manifest: removes the blobs it no longer names
        that no other manifest names and nothing pins, unless the store keeps them."""
        if self.prunes:
            self._remove_unused(digests)

    def copy_manifest(self, source: ModelName, destination: ModelName) -> bool:
        """Gives the source's manifest a second name; False if the source does not exist."""
        if self.read_manifest(source) is None:
            return False
        self.write_manifest_bytes(destination, self.manifest_path(source).read_bytes())
        return True

    def delete_manifest(self, name: ModelName) -> bool:
        """Removes the name: its manifest, damaged or not, and what a failed pull of it left (its
        record, see record_pull); then every blob and partial download they name that no other
        manifest names and nothing pins. The digests are read as text, as `_referenced_digests`
        reads them, so a damaged manifest gives up the blobs it can still be seen to name.
        False if there was neither."""
        named: set[str] = set()
        found = False
        path = self.manifest_path(name)
        if path.is_file():
            named |= _digests_named(path)
            path.unlink()
            self._changed()
            self._tidy(path)
            found = True
        record = self._pull_record(name)
        if record.is_file():
            named |= _digests_named(record)
            record.unlink()
            found = True
        self._remove_unused(named)
        return found

    def _remove_unused(self, named: set[str]) -> None:
        """Removes each of these blobs, and its partial downloads, that no manifest names and
        nothing pins."""
        with self._pins_lock:
            still_used = self._referenced_digests() | set(self._pins)
        for digest in named - still_used:
            self.blob_path(digest).unlink(missing_ok=True)
            for partial in self.blobs_dir.glob(f"{self.partial_download(digest).name}*"):
                partial.unlink(missing_ok=True)

    def _tidy(self, path: Path) -> None:
        """Removes the folders a deleted manifest leaves empty, up to manifests/."""
        for parent in path.parents:
            if parent == self.manifests_dir:
                break
            try:
                parent.rmdir()
            except OSError:
                break

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
                used |= _digests_named(path)
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
        """Every model in the store; a foreign or damaged file is logged and skipped."""
        for path in sorted(self.manifests_dir.glob("*/*/*/*")):
            if not path.is_file() or path.name.startswith("."):
                continue
            try:
                name = parse_name("/".join(path.relative_to(self.manifests_dir).parts[:3])
                                  + ":" + path.name)
                manifest = self._load_manifest(path)
            except FileNotFoundError:
                continue  # removed while we looked
            except (InvalidName, InvalidManifest) as exc:
                log.warning("skipping %s in the model list: %s", path, exc)
                continue
            yield name, manifest


def parse_manifest(data: bytes) -> tuple[Layer, tuple[Layer, ...]]:
    """A manifest's config and layers, every field checked as Ollama's Go types read it:
    schemaVersion 2, an image manifest's mediaType if any, and a config and layers that are
    objects with a string mediaType, a sha256 digest and a size from 0 to what Go's int64 holds
    (MAX_CONFIG_BYTES for the config). InvalidManifest says what is wrong."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise InvalidManifest(f"larger than {MAX_MANIFEST_BYTES} bytes")
    doc = _json_object(data)
    version = doc.get("schemaVersion")
    if type(version) is not int or version != 2:
        raise InvalidManifest("schemaVersion is not 2")
    if doc.get("mediaType", MANIFEST_MEDIA_TYPE) not in (MANIFEST_MEDIA_TYPE,
                                                          OCI_MANIFEST_MEDIA_TYPE):
        raise InvalidManifest("mediaType is not an image manifest's")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise InvalidManifest("layers is not a list")
    config = _layer(doc.get("config"), "config", MAX_CONFIG_BYTES)
    return config, tuple(_layer(entry, f"layer {index}", MAX_BLOB_BYTES)
                         for index, entry in enumerate(layers))


def _layer(entry: Any, what: str, max_size: int) -> Layer:
    if not isinstance(entry, dict):
        raise InvalidManifest(f"{what} is not an object")
    media_type, size = entry.get("mediaType"), entry.get("size")
    if not isinstance(media_type, str):
        raise InvalidManifest(f"{what} has no mediaType string")
    if type(size) is not int or not 0 <= size <= max_size:
        raise InvalidManifest(f"{what} has no size from 0 to {max_size}")
    try:
        return Layer(media_type, normalize_digest(entry.get("digest")), size)
    except InvalidDigest:
        raise InvalidManifest(f"{what} has no sha256 digest") from None


def parse_config(data: bytes) -> dict[str, Any]:
    """A config blob: a JSON object whose fields corral shows have the types Ollama's ConfigV2
    gives them (Ollama could not read the model otherwise); else InvalidManifest."""
    if len(data) > MAX_CONFIG_BYTES:
        raise InvalidManifest(f"larger than {MAX_CONFIG_BYTES} bytes")
    doc = _json_object(data)
    for key in _CONFIG_STRINGS:
        if doc.get(key) is not None and not isinstance(doc[key], str):
            raise InvalidManifest(f"{key} is not a string")
    for key in _CONFIG_STRING_LISTS:
        value = doc.get(key)
        if value is not None and not (isinstance(value, list)
                                      and all(isinstance(item, str) for item in value)):
            raise InvalidManifest(f"{key} is not a list of strings")
    return doc


def _json_object(data: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise InvalidManifest("not JSON") from None
    if not isinstance(doc, dict):
        raise InvalidManifest("not a JSON object")
    return doc


def _digests_named(path: Path) -> set[str]:
    """Every digest the file mentions, read as text; none for a file past MAX_MANIFEST_BYTES
    (no manifest is that large, and reading it whole would be the harm)."""
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size > MAX_MANIFEST_BYTES:
                return set()
            data = f.read()
    except FileNotFoundError:
        return set()  # removed while we looked
    return _digests_in(data)


def _digests_in(data: bytes) -> set[str]:
    return {f"sha256:{h.decode()}" for h in _ANY_DIGEST.findall(data)}


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return 0.0  # gone already: as old as can be


def _allocated(path: Path) -> int:
    """The disk space a (sparse) file takes up; 0 if there is none."""
    try:
        return path.stat().st_blocks * 512
    except FileNotFoundError:
        return 0


def write_private(path: Path, data: bytes) -> None:
    """Writes a file readable by the server's user alone, as its blobs are (BLOB_MODE)."""
    with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, BLOB_MODE), "wb") as f:
        f.write(data)


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

"""A blob arriving over the network in byte ranges, perhaps several at once, into the store.

The bytes go to `blobs/.download-<hex>` at their offsets; `.download-<hex>.ranges` beside it
lists the ranges already on disk, so a later try (after a dropped connection, a full disk or a
restart) fetches only the gaps; both are the server's user's alone, as blobs are. A partial file
without that list (an older corral's) counts as a prefix. The list is written after the bytes it
names and without fsync: after a power cut it may name bytes that never reached the disk, which
the digest check then catches, at the cost of one download more.

Three threads per download keep the event loop to receiving: one writes what arrives; one hashes
the file's written prefix as it grows (from memory when the bytes come in order, else from the
file), beside the writing and the network instead of after them; and one makes what has landed
durable (fdatasync) every CHECKPOINT bytes while more arrives, so the fsync before the blob counts
finds little left: alone at the end it took a third of a loopback pull (sync_file_range's
write-behind saved only a quarter of that, since the disk's cache flush is what it waits for).
The blob counts only after `finish` has checked its digest.
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import sys
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Sequence

import orjson

from store.errors import DigestMismatch
from store.store import BLOB_MODE, Layer, Store, write_private

Range = tuple[int, int]  # [start, end)

BACKLOG = 8  # batches handed to the disk (or hash) thread before `write` waits for it
CHECKPOINT = 32 << 20  # bytes written between updates of the ranges file (and fdatasyncs)
NICE = 10  # the disk thread's nice value (0 to 19, higher yields more)
_READ = 1 << 20  # what the hasher reads at a time when it catches up from the file


def _yield_the_cpu() -> None:
    """Lowers the calling thread's CPU priority: a download is bulk work, and the event loop's
    requests and the workers' generations come first. Only on Linux, which keeps a nice value
    per thread (elsewhere this would name a process)."""
    if sys.platform == "linux":
        thread = threading.get_native_id()
        # Never higher than it was: raising a priority takes privileges.
        os.setpriority(os.PRIO_PROCESS, thread, max(NICE, os.getpriority(os.PRIO_PROCESS, thread)))


def add_range(ranges: list[Range], new: Range) -> list[Range]:
    """`ranges` (sorted, apart) with `new` merged in."""
    start, end = new
    kept: list[Range] = []
    for a, b in ranges:
        if b < start or a > end:
            kept.append((a, b))
        else:
            start, end = min(a, start), max(b, end)
    return sorted([*kept, (start, end)])


def gaps(ranges: Sequence[Range], size: int, part: int) -> list[Range]:
    """What `ranges` leave of [0, size), cut into pieces of at most `part` bytes, in order."""
    holes: list[Range] = []
    position = 0
    for a, b in [*ranges, (size, size)]:
        holes.extend((s, min(s + part, a)) for s in range(position, a, part))
        position = max(position, b)
    return holes


class Download:
    """Use from one event loop: `write` what arrives, then `finish` (verify and keep) or
    `close` (keep what arrived for the next try)."""

    def __init__(self, store: Store, digest: str, size: int) -> None:
        self.size = size
        self._store = store
        self._digest = digest
        self._path = store.partial_download(digest)
        self._ranges_path = self._path.with_name(f"{self._path.name}.ranges")
        self._ranges = self._earlier_ranges()
        self._save_ranges()  # before any byte lands away from the prefix
        self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, BLOB_MODE)
        self._hash = hashlib.sha256()  # the hash thread's alone
        self._hashed = 0  # the file's start, up to here, is hashed or queued to be
        self._unsaved = 0
        self._buffer = bytearray(_READ)
        self.received = sum(b - a for a, b in self._ranges)
        self._disk = ThreadPoolExecutor(1, f"download-{digest[7:19]}", _yield_the_cpu)
        self._hasher = ThreadPoolExecutor(1, f"sha256-{digest[7:19]}", _yield_the_cpu)
        self._hashing: deque[Future[None]] = deque()
        self._syncer = ThreadPoolExecutor(1, f"sync-{digest[7:19]}", _yield_the_cpu)
        self._syncing: Future[None] | None = None  # the fdatasync under way, if any
        self._pending: deque[Future[None]] = deque()
        self._pending.append(self._disk.submit(self._catch_up))  # hash what earlier tries left

    def missing(self, part: int) -> list[Range]:
        """The ranges still to fetch, each at most `part` bytes."""
        return gaps(self._ranges, self.size, part)

    async def write(self, offset: int, chunks: list[bytes]) -> None:
        """Queues contiguous bytes starting at `offset`; waits while the disk thread is behind,
        and raises what it met (a full disk)."""
        length = sum(map(len, chunks))
        if offset + length > self.size:
            raise DigestMismatch(f"{self._digest} is larger than the {self.size} bytes its "
                                 "manifest says")
        self.received += length
        self._pending.append(self._disk.submit(self._store_chunks, offset, chunks))
        while self._pending and (self._pending[0].done() or len(self._pending) > BACKLOG):
            await asyncio.wrap_future(self._pending.popleft())

    async def finish(self) -> Layer:
        """Waits for the disk thread, then renames the file into the store if its digest is
        right; a wrong file is removed (it is no start for a resume) and DigestMismatch raised."""
        await self._drain()
        return await asyncio.get_running_loop().run_in_executor(self._disk, self._commit)

    async def close(self) -> None:
        """Stops, keeping what reached the disk (and the list of it) for the next try; after
        `finish`, only lets the thread go."""
        try:
            await self._drain()
        except OSError:
            pass  # what did land is in the ranges list; `write` raised the error already
        finally:
            try:
                if self._fd >= 0:
                    await asyncio.get_running_loop().run_in_executor(self._disk, self._keep)
            finally:
                for thread in (self._disk, self._hasher, self._syncer):
                    thread.shutdown(wait=False)

    async def _drain(self) -> None:
        while self._pending:
            await asyncio.wrap_future(self._pending.popleft())

    # ---- off the event loop: on the disk thread (or in `__init__`, run in a thread) ------

    def _earlier_ranges(self) -> list[Range]:
        if not self._path.exists():
            return []
        try:
            saved = orjson.loads(self._ranges_path.read_bytes())
            if saved["size"] == self.size:
                return [(int(a), int(b)) for a, b in saved["ranges"]]
        except FileNotFoundError:
            if (length := self._path.stat().st_size) <= self.size:
                return [(0, length)]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            pass
        self._path.unlink()  # nothing in it can be trusted
        return []

    def _store_chunks(self, offset: int, chunks: list[bytes]) -> None:
        views = [memoryview(chunk) for chunk in chunks]
        position = offset
        try:
            while views:  # a short write (the disk filling up) leaves the rest to retry
                written = os.pwritev(self._fd, views, position)
                position += written
                views = _skip(views, written)
        finally:
            if position > offset:
                self._landed((offset, position), chunks)

    def _landed(self, new: Range, chunks: list[bytes]) -> None:
        self._ranges = add_range(self._ranges, new)
        start = new[0]
        for chunk in chunks:  # in order: hash straight from memory
            if start <= self._hashed < start + len(chunk) <= new[1]:
                self._to_hash(self._hash.update, memoryview(chunk)[self._hashed - start:])
                self._hashed = start + len(chunk)
            start += len(chunk)
        self._catch_up()
        self._unsaved += new[1] - new[0]
        if self._unsaved >= CHECKPOINT:
            self._save_ranges()
            if self._syncing is None or self._syncing.done():  # else the next checkpoint's turn
                self._synced()  # raises what the last one met
                self._syncing = self._syncer.submit(os.fdatasync, self._fd)

    def _quiet(self) -> None:
        """Waits until no other thread uses the file, whatever each met: what landed is kept
        (or removed) all the same, and a later try checks the digest."""
        for work in [*self._hashing, *filter(None, [self._syncing])]:
            work.exception()  # waits; the error, if any, is not this step's to raise
        self._hashing.clear()
        self._syncing = None

    def _synced(self) -> None:
        """Waits for the fdatasync under way (the file must stay open until it is done)."""
        syncing, self._syncing = self._syncing, None
        if syncing is not None:
            syncing.result()

    def _catch_up(self) -> None:
        """Has whatever is on disk right after the hashed prefix hashed from the file."""
        written_to = next((b for a, b in self._ranges if a <= self._hashed <= b), self._hashed)
        if written_to > self._hashed:
            self._to_hash(self._hash_file, self._hashed, written_to)
            self._hashed = written_to

    def _to_hash(self, work: Callable[..., object], *args: object) -> None:
        """Queues hashing work in order; waits while the hash thread is behind."""
        self._hashing.append(self._hasher.submit(work, *args))
        while self._hashing and (self._hashing[0].done() or len(self._hashing) > BACKLOG):
            self._hashing.popleft().result()

    def _hashed_all(self) -> None:
        """Waits for the hash thread (the file must stay open until it is done)."""
        while self._hashing:
            self._hashing.popleft().result()

    def _hash_file(self, start: int, end: int) -> None:  # on the hash thread
        view = memoryview(self._buffer)
        while start < end:
            count = os.preadv(self._fd, [view[:min(_READ, end - start)]], start)
            if not count:
                return  # shorter than its ranges list says: the digest check will tell
            self._hash.update(view[:count])
            start += count

    def _save_ranges(self) -> None:
        temp = self._ranges_path.with_name(f"{self._ranges_path.name}.tmp")
        try:
            write_private(temp, orjson.dumps({"size": self.size, "ranges": self._ranges}))
            os.replace(temp, self._ranges_path)
            self._unsaved = 0
        except OSError as exc:
            temp.unlink(missing_ok=True)  # the older list stays: it names less, never more
            if exc.errno != errno.ENOSPC:
                raise

    def _keep(self) -> None:
        try:
            self._save_ranges()
        finally:
            self._quiet()
            os.close(self._fd)
            self._fd = -1

    def _commit(self) -> Layer:
        try:
            self._catch_up()
            self._hashed_all()
            self._synced()
            os.fsync(self._fd)
            digest = f"sha256:{self._hash.hexdigest()}"
            if self._hashed != self.size or digest != self._digest:
                self._path.unlink()
                raise DigestMismatch(f"digest mismatch, expected {self._digest!r}, got "
                                     f"{digest!r}")
            os.replace(self._path, self._store.blob_path(digest))
            return Layer("", digest, self.size)
        finally:
            self._quiet()
            os.close(self._fd)
            self._fd = -1
            self._ranges_path.unlink(missing_ok=True)


def _skip(views: list[memoryview], count: int) -> list[memoryview]:
    """`views` less their first `count` bytes."""
    while views and count >= len(views[0]):
        count -= len(views.pop(0))
    if views and count:
        views[0] = views[0][count:]
    return views

"""A blob downloaded in ranges (store/download.py): out of order, interrupted, resumed, on a full
disk, and counted only after its digest matched."""

from __future__ import annotations

import errno
import hashlib
import os
import sys
import threading
from pathlib import Path

import pytest

from store import download as download_module
from store.download import Download, add_range, gaps
from store.errors import DigestMismatch
from store.store import BLOB_MODE, Store
from tests.full_disk import fill_disk_after

DATA = bytes(range(256)) * 4096  # 1 MiB, no two ranges alike
DIGEST = f"sha256:{hashlib.sha256(DATA).hexdigest()}"


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "models")


def partial_files(store: Store) -> list[str]:
    return sorted(p.name for p in store.blobs_dir.iterdir() if p.name.startswith("."))


async def write_range(download: Download, start: int, end: int) -> None:
    await download.write(start, [DATA[start:(start + end) // 2], DATA[(start + end) // 2:end]])


async def error_writing_it_all(download: Download, part: int) -> OSError:
    """What writing every missing range in parts of `part` bytes, then finishing, raised."""
    with pytest.raises(OSError) as raised:
        for start, end in download.missing(part):
            await write_range(download, start, end)
        await download.finish()
    return raised.value


def test_overlapping_and_touching_ranges_merge() -> None:
    assert add_range([(0, 10), (20, 30)], (10, 20)) == [(0, 30)]
    assert add_range([(0, 10), (40, 50)], (20, 30)) == [(0, 10), (20, 30), (40, 50)]
    assert add_range([(5, 10)], (0, 7)) == [(0, 10)]


def test_gaps_are_cut_into_parts_in_order() -> None:
    assert gaps([(10, 20)], 45, part=10) == [(0, 10), (20, 30), (30, 40), (40, 45)]
    assert gaps([(0, 45)], 45, part=10) == []


async def test_ranges_written_out_of_order_make_the_verified_blob(store: Store) -> None:
    download = Download(store, DIGEST, len(DATA))
    for start, end in reversed(download.missing(len(DATA) // 3)):
        await write_range(download, start, end)
    layer = await download.finish()
    await download.close()
    assert layer.digest == DIGEST and store.read_blob(DIGEST) == DATA
    assert partial_files(store) == []


async def test_a_closed_download_resumes_with_only_the_gaps(store: Store) -> None:
    first = Download(store, DIGEST, len(DATA))
    await write_range(first, 0, 100_000)
    await write_range(first, 500_000, 600_000)
    await first.close()  # a dropped connection, or a stopped server
    second = Download(store, DIGEST, len(DATA))
    assert second.received == 200_000
    assert second.missing(1 << 30) == [(100_000, 500_000), (600_000, len(DATA))]
    for start, end in second.missing(1 << 30):
        await write_range(second, start, end)
    assert (await second.finish()).digest == DIGEST
    await second.close()
    assert store.read_blob(DIGEST) == DATA


async def test_a_partial_file_without_a_ranges_list_counts_as_a_prefix(store: Store) -> None:
    (store.blobs_dir / f".download-{DIGEST[7:]}").write_bytes(DATA[:300_000])
    download = Download(store, DIGEST, len(DATA))
    assert download.missing(1 << 30) == [(300_000, len(DATA))]
    await download.close()


async def test_a_wrong_blob_is_removed_with_its_ranges(store: Store) -> None:
    download = Download(store, DIGEST, len(DATA))
    await download.write(0, [b"\0" * len(DATA)])
    with pytest.raises(DigestMismatch):
        await download.finish()
    await download.close()
    assert partial_files(store) == [] and not store.has_blob(DIGEST)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


async def test_a_partial_download_its_ranges_and_its_blob_are_the_servers_users_alone(
        store: Store) -> None:
    uploaded = store.add_blob_bytes(b"an uploaded blob", "application/octet-stream")
    first = Download(store, DIGEST, len(DATA))
    await write_range(first, 0, 100_000)
    await first.close()  # interrupted: the partial file and its ranges list stay
    partial = store.partial_download(DIGEST)
    assert mode(partial) == mode(partial.with_name(f"{partial.name}.ranges")) == BLOB_MODE
    second = Download(store, DIGEST, len(DATA))
    await write_range(second, 100_000, len(DATA))
    await second.finish()
    await second.close()
    assert mode(store.blob_path(DIGEST)) == mode(store.blob_path(uploaded.digest)) == BLOB_MODE


async def test_bytes_past_the_size_are_refused(store: Store) -> None:
    download = Download(store, DIGEST, len(DATA))
    with pytest.raises(DigestMismatch, match="larger"):
        await download.write(len(DATA) - 10, [b"x" * 11])
    await download.close()


async def test_a_full_disk_keeps_what_landed_resumable(store: Store,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    fill_disk_after(monkeypatch, 250_000)
    first = Download(store, DIGEST, len(DATA))
    assert (await error_writing_it_all(first, 100_000)).errno == errno.ENOSPC
    await first.close()
    monkeypatch.undo()  # space was freed
    second = Download(store, DIGEST, len(DATA))
    assert second.missing(1 << 30) == [(250_000, len(DATA))]
    await write_range(second, 250_000, len(DATA))
    assert (await second.finish()).digest == DIGEST
    await second.close()


@pytest.mark.skipif(sys.platform != "linux", reason="only Linux keeps a nice value per thread")
def test_the_disk_thread_yields_the_cpu_and_the_rest_of_the_process_does_not() -> None:
    before = os.getpriority(os.PRIO_PROCESS, 0)
    seen: list[int] = []

    def disk_thread() -> None:
        download_module._yield_the_cpu()
        seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))

    thread = threading.Thread(target=disk_thread)
    thread.start()
    thread.join()
    assert seen == [max(download_module.NICE, before)]
    assert os.getpriority(os.PRIO_PROCESS, 0) == before


async def test_what_landed_is_synced_while_more_arrives(store: Store,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(download_module, "CHECKPOINT", 100_000)
    synced_before_finish: list[int] = []
    monkeypatch.setattr(os, "fdatasync", lambda fd: synced_before_finish.append(fd))
    download = Download(store, DIGEST, len(DATA))
    for start, end in download.missing(200_000):
        await write_range(download, start, end)
    await download._drain()
    assert synced_before_finish  # before finish's fsync, which then finds little left to write
    assert (await download.finish()).digest == DIGEST
    await download.close()


async def test_a_failed_sync_fails_the_download(store: Store,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_disk(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(download_module, "CHECKPOINT", 100_000)
    monkeypatch.setattr(os, "fdatasync", broken_disk)
    download = Download(store, DIGEST, len(DATA))
    assert (await error_writing_it_all(download, 200_000)).errno == errno.EIO
    await download.close()
    assert store.has_blob(DIGEST) is False

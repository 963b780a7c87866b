"""Weights on a cluster node that does not share the front end's store: fetched once by digest,
verified, served by digest only (workers/blobs.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from workers import blobs
from workers.blobs import BlobSource, digest_of, fetch_blob

DATA = b"gguf weights " * 100
DIGEST = f"sha256:{hashlib.sha256(DATA).hexdigest()}"


@pytest.fixture(autouse=True)
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(blobs, "CHUNK", 64)  # many reads for one blob


def reader(data: bytes, calls: list[int]) -> blobs.Read:
    def read(offset: int, length: int) -> bytes:
        calls.append(offset)
        return data[offset:offset + length]
    return read


def test_a_missing_blob_is_fetched_whole_by_digest_into_the_cache(tmp_path: Path) -> None:
    path = fetch_blob(reader(DATA, []), DIGEST, tmp_path / "cache")
    assert path == tmp_path / "cache" / DIGEST.replace(":", "-")
    assert path.read_bytes() == DATA


def test_a_blob_in_the_cache_is_not_fetched_again(tmp_path: Path) -> None:
    fetch_blob(reader(DATA, []), DIGEST, tmp_path)
    calls: list[int] = []
    assert fetch_blob(reader(DATA, calls), DIGEST, tmp_path).read_bytes() == DATA
    assert calls == []


def test_a_blob_that_arrives_damaged_is_refused_and_not_kept(tmp_path: Path) -> None:
    damaged = DATA[:100] + b"X" + DATA[101:]
    with pytest.raises(ValueError, match="arrived damaged"):
        fetch_blob(reader(damaged, []), DIGEST, tmp_path)
    assert not (tmp_path / DIGEST.replace(":", "-")).exists()
    assert fetch_blob(reader(DATA, []), DIGEST, tmp_path).read_bytes() == DATA


def test_only_a_store_blob_path_names_a_digest_to_fetch() -> None:
    assert digest_of(f"/models/blobs/{DIGEST.replace(':', '-')}") == DIGEST
    with pytest.raises(ValueError, match="names no blob"):
        digest_of("/models/elsewhere/model.gguf")


def test_the_blob_source_reads_a_blob_by_digest_in_ranges(tmp_path: Path) -> None:
    (tmp_path / DIGEST.replace(":", "-")).write_bytes(DATA)
    source = BlobSource(str(tmp_path))
    assert source.read(DIGEST, 13, 5) == DATA[13:18]


def test_the_blob_source_serves_digests_never_paths(tmp_path: Path) -> None:
    (tmp_path / "secret").write_bytes(b"key")
    with pytest.raises(ValueError, match="not a blob digest"):
        BlobSource(str(tmp_path / "blobs")).read("../secret", 0, 10)

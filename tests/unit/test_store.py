"""The model store: verified blobs, atomic manifests, and blob pruning on delete."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from store.errors import DigestMismatch, InvalidDigest
from store.names import parse_name
from store.store import CONFIG_MEDIA_TYPE, MODEL_MEDIA, Store, normalize_digest


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "models")


def test_blob_is_stored_under_its_digest_after_verification(store: Store) -> None:
    writer = store.blob_writer(digest(b"weights"))
    writer.write(b"weig")
    writer.write(b"hts")
    layer = writer.commit()
    assert layer.digest == digest(b"weights") and layer.size == 7
    assert store.blob_path(layer.digest).read_bytes() == b"weights"
    assert store.blob_path(layer.digest).name == "sha256-" + layer.digest[7:]


def test_mismatched_blob_is_discarded(store: Store) -> None:
    writer = store.blob_writer(digest(b"expected"))
    writer.write(b"something else")
    with pytest.raises(DigestMismatch):
        writer.commit()
    assert list(store.blobs_dir.iterdir()) == []


@pytest.mark.parametrize("bad", ["sha256:abc", "md5:" + "0" * 32, "../../x", "sha256:" + "G" * 64])
def test_malformed_digests_are_refused(bad: str) -> None:
    with pytest.raises(InvalidDigest):
        normalize_digest(bad)


def test_dash_form_of_a_digest_is_accepted() -> None:
    assert normalize_digest("sha256-" + "a" * 64) == "sha256:" + "a" * 64


def test_manifest_round_trip_and_listing(store: Store) -> None:
    model = store.add_blob_bytes(b"GGUF....", MODEL_MEDIA)
    config = store.add_blob_bytes(b"{}", CONFIG_MEDIA_TYPE)
    name = parse_name("team/model:v1")
    store.write_manifest(name, config, [model])
    manifest = store.read_manifest(name)
    assert manifest is not None and manifest.layers == (model,) and manifest.config == config
    assert manifest.size == model.size + config.size
    assert manifest.digest == hashlib.sha256(store.manifest_path(name).read_bytes()).hexdigest()
    assert [n.display for n, _ in store.list_manifests()] == ["team/model:v1"]
    leftovers = [p for p in store.manifest_path(name).parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # the temp file was renamed into place


def test_delete_prunes_only_blobs_no_other_model_uses(store: Store) -> None:
    shared = store.add_blob_bytes(b"shared weights", MODEL_MEDIA)
    own = store.add_blob_bytes(b"own system", "application/vnd.ollama.image.system")
    config = store.add_blob_bytes(b"{}", CONFIG_MEDIA_TYPE)
    store.write_manifest(parse_name("a"), config, [shared, own])
    store.write_manifest(parse_name("b"), config, [shared])
    store.delete_manifest(parse_name("a"))
    assert store.has_blob(shared.digest) and store.has_blob(config.digest)
    assert not store.has_blob(own.digest)
    assert store.read_manifest(parse_name("a")) is None


def test_partial_uploads_left_by_a_killed_server_are_swept(tmp_path: Path) -> None:
    store = Store(tmp_path)
    writer = store.blob_writer()
    writer.write(b"half a model")  # never committed nor aborted: the server died here
    kept = store.add_blob_bytes(b"a finished blob", MODEL_MEDIA)
    assert Store(tmp_path).sweep_partials() == 1
    assert [p.name for p in (tmp_path / "blobs").iterdir()] == [kept.digest.replace(":", "-")]


def test_names_match_existing_manifests_case_insensitively(tmp_path: Path) -> None:
    store = Store(tmp_path)
    config = store.add_blob_bytes(b"{}", CONFIG_MEDIA_TYPE)
    store.write_manifest(parse_name("Team/Gemma3:270M"), config, [])
    assert store.read_manifest(parse_name("team/gemma3:270m")) is not None
    store.write_manifest(parse_name("TEAM/GEMMA3:270m"), config, [])  # rewrites, no second copy
    assert [name.display for name, _ in store.list_manifests()] == ["Team/Gemma3:270M"]


def test_a_blob_named_only_by_an_unreadable_manifest_survives_a_delete(tmp_path: Path) -> None:
    store = Store(tmp_path)
    shared = store.add_blob_bytes(b"weights", MODEL_MEDIA)
    config = store.add_blob_bytes(b"{}", CONFIG_MEDIA_TYPE)
    store.write_manifest(parse_name("mine"), config, [shared])
    foreign = store.manifests_dir / "registry.ollama.ai" / "library" / "theirs" / "latest"
    foreign.parent.mkdir(parents=True)
    foreign.write_text('{"schemaVersion": 3, "layers": [{"digest": "%s"' % shared.digest)  # cut
    store.delete_manifest(parse_name("mine"))
    assert store.has_blob(shared.digest)


def test_a_pinned_blob_survives_the_delete_of_its_last_model(tmp_path: Path) -> None:
    store = Store(tmp_path)
    weights = store.add_blob_bytes(b"weights", MODEL_MEDIA)
    config = store.add_blob_bytes(b"{}", CONFIG_MEDIA_TYPE)
    store.write_manifest(parse_name("base"), config, [weights])
    with store.pinned([weights.digest]):  # a create deriving from it is under way
        store.delete_manifest(parse_name("base"))
        assert store.has_blob(weights.digest)
    store.remove_if_unused(weights.digest)
    assert not store.has_blob(weights.digest)


def test_a_resumed_blob_writer_goes_on_from_its_partial_file(tmp_path: Path) -> None:
    store = Store(tmp_path)
    data = b"x" * 5000
    partial = store.blobs_dir / ".download-x"
    first = store.blob_writer(resume=partial)
    first.write(data[:1234])
    first.abort()  # a dropped connection: the partial file stays
    assert partial.stat().st_size == 1234
    second = store.blob_writer(f"sha256:{hashlib.sha256(data).hexdigest()}", resume=partial)
    assert second.size == 1234
    second.write(data[1234:])
    layer = second.commit()
    assert store.read_blob(layer.digest) == data and not partial.exists()

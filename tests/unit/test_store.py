"""The model store: verified blobs, atomic manifests, and blob pruning on delete."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from store.errors import DigestMismatch, InvalidDigest, InvalidManifest, NoSpace
from store.names import parse_name
from store.store import (BLOB_MODE, CONFIG_MEDIA_TYPE, MANIFEST_MEDIA_TYPE, MAX_BLOB_BYTES,
                         MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES, MODEL_MEDIA,
                         OCI_MANIFEST_MEDIA_TYPE, PARTIAL_EXPIRY_S, Layer, Store,
                         normalize_digest, parse_config, parse_manifest)


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


def test_a_replaced_manifest_prunes_the_blobs_only_it_named(store: Store) -> None:
    old, new, kept = (store.add_blob_bytes(data, MODEL_MEDIA)
                      for data in (b"old weights", b"new weights", b"kept weights"))
    config = store.add_blob_bytes(b"{}", CONFIG_MEDIA_TYPE)
    store.write_manifest(parse_name("a"), config, [old, kept])
    store.write_manifest(parse_name("b"), config, [kept])
    replaced = store.write_manifest(parse_name("a"), config, [new])
    assert replaced == {old.digest, kept.digest}
    store.prune(replaced)
    assert not store.has_blob(old.digest)
    assert store.has_blob(kept.digest) and store.has_blob(new.digest)  # b names it


def test_a_store_that_does_not_prune_keeps_what_a_replaced_manifest_named(
        tmp_path: Path) -> None:
    store = Store(tmp_path, prune=False)  # OLLAMA_NOPRUNE
    old, new = (store.add_blob_bytes(data, MODEL_MEDIA) for data in (b"old", b"new"))
    config = store.add_blob_bytes(b"{}", CONFIG_MEDIA_TYPE)
    store.write_manifest(parse_name("a"), config, [old])
    store.prune(store.write_manifest(parse_name("a"), config, [new]))
    assert store.has_blob(old.digest)


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


# ---- manifests as a registry or a hand may leave them ---------------------------------------

CONFIG = {"mediaType": CONFIG_MEDIA_TYPE, "digest": digest(b"{}"), "size": 2}
WEIGHTS = {"mediaType": MODEL_MEDIA, "digest": digest(b"GGUF"), "size": 4}


def manifest_bytes(**fields: Any) -> bytes:
    """A good manifest with `fields` changed (None: left out)."""
    doc = {"schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE, "config": CONFIG,
           "layers": [WEIGHTS], **fields}
    return orjson.dumps({k: v for k, v in doc.items() if v is not None})


MALFORMED = {
    "config a number (issue 16)": manifest_bytes(config=0, layers=[]),
    "no config": manifest_bytes(config=None),
    "schemaVersion 1": manifest_bytes(schemaVersion=1),
    "schemaVersion a string": manifest_bytes(schemaVersion="2"),
    "an index, not a manifest": manifest_bytes(
        mediaType="application/vnd.oci.image.index.v1+json"),
    "layers not a list": manifest_bytes(layers={"0": WEIGHTS}),
    "a layer not an object": manifest_bytes(layers=["GGUF"]),
    "a negative size": manifest_bytes(layers=[{**WEIGHTS, "size": -1}]),
    "a size in a string": manifest_bytes(layers=[{**WEIGHTS, "size": "4"}]),
    "a size as a boolean": manifest_bytes(layers=[{**WEIGHTS, "size": True}]),
    "a size past int64": manifest_bytes(layers=[{**WEIGHTS, "size": MAX_BLOB_BYTES + 1}]),
    "a config past its cap": manifest_bytes(config={**CONFIG, "size": MAX_CONFIG_BYTES + 1}),
    "a bad digest": manifest_bytes(layers=[{**WEIGHTS, "digest": "sha256:../../x"}]),
    "no mediaType": manifest_bytes(layers=[{"digest": WEIGHTS["digest"], "size": 4}]),
    "a mediaType not a string": manifest_bytes(config={**CONFIG, "mediaType": 7}),
    "not JSON": b'{"schemaVersion": 2, "config": ',
    "JSON but a list": b"[]",
    "past the size cap": manifest_bytes()[:-1] + b" " * MAX_MANIFEST_BYTES + b"}",
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_a_malformed_manifest_is_refused_and_not_written(store: Store, data: bytes) -> None:
    with pytest.raises(InvalidManifest):
        store.write_manifest_bytes(parse_name("bad"), data)
    assert not store.manifest_path(parse_name("bad")).exists()


@pytest.mark.parametrize("media_type", [MANIFEST_MEDIA_TYPE, OCI_MANIFEST_MEDIA_TYPE, None])
def test_a_docker_or_oci_manifest_is_read_whole(media_type: str | None) -> None:
    config, layers = parse_manifest(manifest_bytes(mediaType=media_type))
    assert config == Layer(CONFIG_MEDIA_TYPE, CONFIG["digest"], 2)
    assert layers == (Layer(MODEL_MEDIA, WEIGHTS["digest"], 4),)


def by_hand(store: Store, name: str, data: bytes) -> Path:
    """A manifest file put in the store behind the server's back (or by an older corral)."""
    path = store.manifest_path(parse_name(name))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("config_blob", [b"[1, 2]", b'"text"', b"not json",
                                         b'{"model_family": 3}', b'{"model_families": "x"}'])
def test_a_config_blob_ollama_could_not_read_is_refused(store: Store, config_blob: bytes) -> None:
    with pytest.raises(InvalidManifest):
        parse_config(config_blob)


def test_damaged_manifests_are_skipped_by_the_listing_and_logged(
        store: Store, caplog: pytest.LogCaptureFixture) -> None:
    good = store.add_blob_bytes(b"{}", CONFIG_MEDIA_TYPE)
    store.write_manifest(parse_name("good"), good, [])
    by_hand(store, "config-a-number", MALFORMED["config a number (issue 16)"])
    not_an_object = store.add_blob_bytes(b"[1, 2]", CONFIG_MEDIA_TYPE)
    by_hand(store, "config-blob-a-list", manifest_bytes(config={
        "mediaType": CONFIG_MEDIA_TYPE, "digest": not_an_object.digest, "size": 6}))
    by_hand(store, "huge", b" " * (MAX_MANIFEST_BYTES + 1))
    with caplog.at_level(logging.WARNING, "corral.store"):
        assert [name.display for name, _ in store.list_manifests()] == ["good:latest"]
    assert len(caplog.records) == 3
    assert store.read_manifest(parse_name("config-blob-a-list")) is None


@pytest.mark.parametrize("damage", ["config a number (issue 16)", "no config",
                                    "past the size cap"])
def test_a_damaged_manifest_is_deleted(store: Store, damage: str) -> None:
    path = by_hand(store, "broken", MALFORMED[damage])
    assert store.delete_manifest(parse_name("broken")) is True
    assert not path.exists() and list(store.manifests_dir.iterdir()) == []


def test_a_damaged_manifest_takes_the_blobs_it_still_names_and_no_other_model_uses(
        store: Store) -> None:
    own = store.add_blob_bytes(b"GGUF", MODEL_MEDIA)
    shared = store.add_blob_bytes(b"shared GGUF", MODEL_MEDIA)
    config = store.add_blob_bytes(b"{}", CONFIG_MEDIA_TYPE)
    store.write_manifest(parse_name("other"), config, [shared])
    by_hand(store, "broken", manifest_bytes(config=0, layers=[own.to_json(), shared.to_json()]))
    store.delete_manifest(parse_name("broken"))
    assert not store.has_blob(own.digest) and store.has_blob(shared.digest)


# ---- what unfinished pulls leave -------------------------------------------------------------

def written(path: Path, age: float = 0) -> Path:
    """A file last written `age` seconds ago."""
    path.write_bytes(b"x")
    when = time.time() - age
    os.utime(path, (when, when))
    return path


def test_the_sweep_takes_downloads_untouched_past_the_expiry_and_keeps_recent_ones(
        store: Store) -> None:
    old = store.partial_download(digest(b"old"))
    stale = [written(path, PARTIAL_EXPIRY_S + 60) for path in
             (old, old.with_name(f"{old.name}.ranges"), store.blobs_dir / ".pull-1")]
    recent = written(store.partial_download(digest(b"recent")), PARTIAL_EXPIRY_S + 60)
    ranges = written(recent.with_name(f"{recent.name}.ranges"))  # a download goes on
    assert store.sweep_partials() == len(stale)
    assert not any(path.exists() for path in stale)
    assert recent.exists() and ranges.exists()  # a group is as recent as its newest file


def test_deleting_the_name_of_a_failed_pull_removes_what_it_left(store: Store) -> None:
    name = parse_name("registry.example/team/model:v1")
    config = store.add_blob_bytes(b"{}", CONFIG_MEDIA_TYPE)  # fetched before the failure
    weights = Layer(MODEL_MEDIA, digest(b"never finished"), 100)
    store.record_pull(name, [config, weights])
    partial = store.partial_download(weights.digest)
    partial.write_bytes(b"never")
    partial.with_name(f"{partial.name}.ranges").write_bytes(b'{"size": 100, "ranges": []}')
    assert store.delete_manifest(parse_name("registry.example/Team/model:v1")) is True
    assert list(store.blobs_dir.iterdir()) == []
    assert store.delete_manifest(name) is False


def test_a_delete_spares_what_a_pull_under_way_has_pinned(store: Store) -> None:
    name = parse_name("model")
    weights = Layer(MODEL_MEDIA, digest(b"arriving"), 100)
    store.record_pull(name, [weights])
    store.partial_download(weights.digest).write_bytes(b"arriv")
    with store.pinned([weights.digest]):
        assert store.delete_manifest(name) is True
    assert store.partial_download(weights.digest).exists()


def test_a_forgotten_pull_leaves_no_record(store: Store) -> None:
    store.record_pull(parse_name("model"), [Layer(MODEL_MEDIA, digest(b"w"), 1)])
    store.forget_pull(parse_name("model"))
    assert store.delete_manifest(parse_name("model")) is False


def test_a_pull_record_is_the_servers_users_alone(store: Store) -> None:
    store.record_pull(parse_name("model"), [Layer(MODEL_MEDIA, digest(b"w"), 1)])
    (record,) = store.blobs_dir.iterdir()
    assert record.stat().st_mode & 0o777 == BLOB_MODE


def test_a_pull_the_disk_cannot_hold_is_refused_naming_the_sizes(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(0, 0, 1000))
    with pytest.raises(NoSpace, match="needs 1001 bytes more and 1000 bytes are free"):
        store.ensure_room([Layer(MODEL_MEDIA, digest(b"big"), 1001)])
    assert list(store.blobs_dir.iterdir()) == []


def test_what_is_here_already_does_not_count_against_the_free_space(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    here = store.add_blob_bytes(b"x" * 5000, MODEL_MEDIA)
    partial = store.partial_download(digest(b"half"))
    partial.write_bytes(b"y" * 8192)
    held = partial.stat().st_blocks * 512
    monkeypatch.setattr(shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(0, 0, 1000))
    store.ensure_room([here, Layer(MODEL_MEDIA, digest(b"half"), held + 1000)])
    with pytest.raises(NoSpace):
        store.ensure_room([here, Layer(MODEL_MEDIA, digest(b"half"), held + 1001)])

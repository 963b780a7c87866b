"""Creating models in a store: FROM names, uploaded blobs and server-side paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from store.create import CreateSpec, create_model
from store.errors import InvalidInput
from store.names import parse_name
from store.store import MODEL_MEDIA, Store
from tests.gguf_files import one_block_model


async def _create(store: Store, **fields: object) -> list[str]:
    return [status async for status in create_model(store, CreateSpec(**fields))]  # type: ignore[arg-type]


def _weights(store: Store, name: str) -> str:
    manifest = store.read_manifest(parse_name(name))
    assert manifest is not None
    layer = manifest.layer(MODEL_MEDIA)
    assert layer is not None
    return layer.digest


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "models")


@pytest.fixture
def allowed(tmp_path: Path) -> Path:
    folder = tmp_path / "imports"
    folder.mkdir()
    (folder / "tiny.gguf").write_bytes(one_block_model())
    return folder


async def test_a_path_inside_an_allowed_folder_is_imported(store: Store, allowed: Path) -> None:
    statuses = await _create(store, model="tiny", from_=str(allowed / "tiny.gguf"),
                             import_dirs=(allowed,))
    assert statuses[-1] == "success"
    assert store.has_blob(_weights(store, "tiny"))


async def test_a_path_outside_the_allowed_folders_is_refused(store: Store, allowed: Path) -> None:
    with pytest.raises(InvalidInput, match="CORRAL_ALLOWED_IMPORT_DIRS"):
        await _create(store, model="x", from_="/etc/passwd", import_dirs=(allowed,))
    assert list(store.list_manifests()) == []


async def test_no_path_is_allowed_by_default(store: Store, allowed: Path) -> None:
    with pytest.raises(InvalidInput, match="CORRAL_ALLOWED_IMPORT_DIRS"):
        await _create(store, model="x", from_=str(allowed / "tiny.gguf"))


async def test_dot_dot_out_of_an_allowed_folder_is_refused(store: Store, allowed: Path,
                                                           tmp_path: Path) -> None:
    (tmp_path / "outside.gguf").write_bytes(one_block_model())
    with pytest.raises(InvalidInput, match="CORRAL_ALLOWED_IMPORT_DIRS"):
        await _create(store, model="x", from_=f"{allowed}/../outside.gguf", import_dirs=(allowed,))


async def test_a_symlink_out_of_an_allowed_folder_is_refused(store: Store, allowed: Path,
                                                             tmp_path: Path) -> None:
    (tmp_path / "outside.gguf").write_bytes(one_block_model())
    (allowed / "link.gguf").symlink_to(tmp_path / "outside.gguf")
    with pytest.raises(InvalidInput, match="CORRAL_ALLOWED_IMPORT_DIRS"):
        await _create(store, model="x", from_=str(allowed / "link.gguf"), import_dirs=(allowed,))


async def test_a_blob_of_the_store_itself_is_always_allowed(store: Store, allowed: Path) -> None:
    await _create(store, model="first", from_=str(allowed / "tiny.gguf"), import_dirs=(allowed,))
    digest = _weights(store, "first")
    await _create(store, model="second", from_=str(store.blob_path(digest)))
    assert _weights(store, "second") == digest


async def test_a_file_that_is_not_gguf_is_refused_before_it_is_copied(store: Store,
                                                                      allowed: Path) -> None:
    (allowed / "notes.txt").write_text("hello")
    with pytest.raises(InvalidInput, match="only GGUF"):
        await _create(store, model="x", from_=str(allowed / "notes.txt"), import_dirs=(allowed,))
    assert not [p for p in store.blobs_dir.iterdir() if p.name.startswith("sha256-")]

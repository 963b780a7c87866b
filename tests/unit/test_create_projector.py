"""Creating a model with a projector (mmproj) layer, as Ollama's create does: from two uploaded
GGUFs, from a Modelfile's two FROM paths, or from a model that has one; and what a projector
layer means to resolve, /api/show, copy and delete."""

from __future__ import annotations

from pathlib import Path
from typing import Awaitable, Callable

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from gguf import GGUFValueType

from server import settings
from server.api import models
from server.context import SETTINGS, STORE
from store.create import CreateSpec, create_model
from store.errors import InvalidInput, NotFound
from store.model import resolve
from store.modelfile import parse, to_create_spec
from store.names import parse_name
from store.store import MODEL_MEDIA, PROJECTOR_MEDIA, TEMPLATE_MEDIA, Store
from tests.gguf_files import one_block_model, tiny_clip_projector, tiny_llama_f16

Client = Callable[[web.Application], Awaitable[TestClient]]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "models")


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with weights (model.gguf), a projector (mmproj.gguf) and a second projector."""
    folder = tmp_path_factory.mktemp("sources")
    (folder / "model.gguf").write_bytes(one_block_model())
    tiny_clip_projector(folder / "mmproj.gguf")
    tiny_clip_projector(folder / "other-mmproj.gguf", seed=1)
    return folder


def _uploaded(store: Store, folder: Path, *names: str) -> dict[str, str]:
    return {name: store.add_blob_file(folder / name) for name in names}


async def _create(store: Store, **fields: object) -> list[object]:
    return [s async for s in create_model(store, CreateSpec(**fields))]  # type: ignore[arg-type]


def _media(store: Store, name: str) -> list[str]:
    manifest = store.read_manifest(parse_name(name))
    assert manifest is not None
    return [layer.media_type for layer in manifest.layers]


async def test_two_uploaded_files_give_the_projector_its_own_layer(store: Store,
                                                                   sources: Path) -> None:
    files = _uploaded(store, sources, "model.gguf", "mmproj.gguf")
    await _create(store, model="vision", files=files)
    manifest = store.read_manifest(parse_name("vision"))
    assert manifest is not None
    assert {(layer.media_type, layer.digest) for layer in manifest.layers} == {
        (MODEL_MEDIA, files["model.gguf"]), (PROJECTOR_MEDIA, files["mmproj.gguf"])}


async def test_the_files_layers_come_in_the_order_of_their_names(store: Store,
                                                                 sources: Path) -> None:
    await _create(store, model="a", files=_uploaded(store, sources, "model.gguf", "mmproj.gguf"))
    await _create(store, model="b", files={"a-model.gguf": store.add_blob_file(sources / "model.gguf"),
                                           "mmproj.gguf": store.add_blob_file(sources / "mmproj.gguf")})
    assert _media(store, "a") == [PROJECTOR_MEDIA, MODEL_MEDIA]
    assert _media(store, "b") == [MODEL_MEDIA, PROJECTOR_MEDIA]


async def test_a_detected_template_follows_the_weights_and_the_projector(store: Store,
                                                                        sources: Path,
                                                                        tmp_path: Path) -> None:
    chatml = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
              "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
              "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
    weights = tiny_llama_f16(tmp_path / "chat.gguf", chat_template=chatml)
    files = {"chat.gguf": store.add_blob_file(weights),
             "mmproj.gguf": store.add_blob_file(sources / "mmproj.gguf")}
    await _create(store, model="m", files=files)
    assert _media(store, "m")[:3] == [MODEL_MEDIA, PROJECTOR_MEDIA, TEMPLATE_MEDIA]


async def test_two_projectors_are_refused(store: Store, sources: Path) -> None:
    files = _uploaded(store, sources, "model.gguf", "mmproj.gguf", "other-mmproj.gguf")
    with pytest.raises(InvalidInput, match="only one projector"):
        await _create(store, model="x", files=files)
    assert list(store.list_manifests()) == []


async def test_two_model_files_are_refused(store: Store, sources: Path, tmp_path: Path) -> None:
    (tmp_path / "second.gguf").write_bytes(one_block_model(data=b"\1" * 64))
    files = {**_uploaded(store, sources, "model.gguf"),
             **_uploaded(store, tmp_path, "second.gguf")}
    with pytest.raises(InvalidInput, match="exactly one GGUF model file"):
        await _create(store, model="x", files=files)


async def test_a_projector_without_weights_is_refused(store: Store, sources: Path) -> None:
    with pytest.raises(InvalidInput, match="exactly one GGUF model file"):
        await _create(store, model="x", files=_uploaded(store, sources, "mmproj.gguf"))


async def test_a_projector_llama_cpp_cannot_read_is_refused(store: Store, sources: Path,
                                                            tmp_path: Path) -> None:
    tiny_clip_projector(tmp_path / "bad.gguf", retype={"clip.vision.patch_size":
                                                       GGUFValueType.INT32})
    files = {**_uploaded(store, sources, "model.gguf"), **_uploaded(store, tmp_path, "bad.gguf")}
    with pytest.raises(InvalidInput, match="bad.gguf: metadata clip.vision.patch_size is of "
                                           "type i32, llama.cpp reads it as u32"):
        await _create(store, model="x", files=files)
    assert list(store.list_manifests()) == []


async def test_a_modelfile_with_two_from_paths_creates_a_model_with_a_projector(
        store: Store, sources: Path) -> None:
    text = f"FROM {sources / 'model.gguf'}\nFROM {sources / 'mmproj.gguf'}\n"
    spec = to_create_spec(parse(text), "vision")
    spec.import_dirs = (sources,)
    await _create(store, **vars(spec))
    assert _media(store, "vision") == [PROJECTOR_MEDIA, MODEL_MEDIA]
    assert resolve(store, "vision").projector_path is not None


async def test_two_from_paths_copy_nothing_when_one_is_refused(store: Store, sources: Path,
                                                               tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InvalidInput, match="only GGUF"):
        await _create(store, model="x", from_paths=[str(sources / "model.gguf"),
                                                    str(tmp_path / "notes.txt")],
                      import_dirs=(sources, tmp_path))
    assert not [p for p in store.blobs_dir.iterdir() if p.name.startswith("sha256-")]


async def test_a_model_made_from_one_with_a_projector_keeps_it(store: Store,
                                                               sources: Path) -> None:
    files = _uploaded(store, sources, "model.gguf", "mmproj.gguf")
    await _create(store, model="vision", files=files)
    await _create(store, model="derived", from_="vision", system="Be brief.")
    assert resolve(store, "derived").projector_path == store.blob_path(files["mmproj.gguf"])


async def test_resolve_gives_the_projector_path(store: Store, sources: Path) -> None:
    files = _uploaded(store, sources, "model.gguf", "mmproj.gguf")
    await _create(store, model="vision", files=files)
    spec = resolve(store, "vision")
    assert spec.projector_path == store.blob_path(files["mmproj.gguf"])
    assert spec.model_path == store.blob_path(files["model.gguf"])


async def test_a_model_without_a_projector_resolves_to_none(store: Store, sources: Path) -> None:
    await _create(store, model="plain", files=_uploaded(store, sources, "model.gguf"))
    assert resolve(store, "plain").projector_path is None


async def test_a_model_whose_projector_blob_is_missing_is_not_found(store: Store,
                                                                    sources: Path) -> None:
    files = _uploaded(store, sources, "model.gguf", "mmproj.gguf")
    await _create(store, model="vision", files=files)
    store.blob_path(files["mmproj.gguf"]).unlink()
    with pytest.raises(NotFound):
        resolve(store, "vision")


async def test_deleting_the_last_model_with_a_projector_removes_its_blob(store: Store,
                                                                         sources: Path) -> None:
    files = _uploaded(store, sources, "model.gguf", "mmproj.gguf")
    await _create(store, model="vision", files=files)
    store.copy_manifest(parse_name("vision"), parse_name("copy"))
    store.delete_manifest(parse_name("vision"))
    assert store.has_blob(files["mmproj.gguf"])
    store.delete_manifest(parse_name("copy"))
    assert not store.has_blob(files["mmproj.gguf"])


async def test_a_models_size_counts_its_projector(store: Store, sources: Path) -> None:
    await _create(store, model="plain", files=_uploaded(store, sources, "model.gguf"))
    await _create(store, model="vision", files=_uploaded(store, sources, "model.gguf",
                                                         "mmproj.gguf"))
    sizes = {name.display: manifest.size for name, manifest in store.list_manifests()}
    projector = (sources / "mmproj.gguf").stat().st_size
    assert sizes["vision:latest"] == sizes["plain:latest"] + projector


async def _show(aiohttp_client: Client, store: Store, model: str) -> dict:
    app = web.Application()
    app[SETTINGS] = settings.load({})
    app[STORE] = store
    app.router.add_post("/api/show", models.show)
    client = await aiohttp_client(app)
    reply = await client.post("/api/show", json={"model": model})
    assert reply.status == 200
    return await reply.json()


async def test_show_lists_vision_and_the_projectors_metadata(aiohttp_client: Client,
                                                             store: Store, sources: Path) -> None:
    await _create(store, model="vision", files=_uploaded(store, sources, "model.gguf",
                                                         "mmproj.gguf"))
    shown = await _show(aiohttp_client, store, "vision")
    assert shown["capabilities"] == ["completion", "vision"]
    assert shown["projector_info"]["general.architecture"] == "clip"
    assert shown["projector_info"]["clip.vision.image_size"] == 32
    assert shown["projector_info"]["clip.vision.image_mean"] == pytest.approx(
        [0.48145466, 0.4578275, 0.40821073])


async def test_show_of_a_model_without_projector_has_no_projector_info(aiohttp_client: Client,
                                                                       store: Store,
                                                                       sources: Path) -> None:
    await _create(store, model="plain", files=_uploaded(store, sources, "model.gguf"))
    shown = await _show(aiohttp_client, store, "plain")
    assert "projector_info" not in shown and "vision" not in shown["capabilities"]


async def test_the_shown_modelfile_creates_the_same_layers_again(aiohttp_client: Client,
                                                                 store: Store,
                                                                 sources: Path) -> None:
    await _create(store, model="vision", files=_uploaded(store, sources, "model.gguf",
                                                         "mmproj.gguf"))
    shown = await _show(aiohttp_client, store, "vision")
    await _create(store, **vars(to_create_spec(parse(shown["modelfile"]), "again")))
    # The same layers; in the order of the blobs' names, as Ollama's client names FROM files.
    assert (set(store.read_manifest(parse_name("again")).layers)  # type: ignore[union-attr]
            == set(store.read_manifest(parse_name("vision")).layers))  # type: ignore[union-attr]

"""A model created with a draft model (Ollama's `draft_files` and Modelfile DRAFT): the draft is a
layer of its own with Ollama's media type, named in the config as Ollama's create names it, and
only a GGUF model of the same vocabulary is taken."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from server.schemas import CreateRequest
from store.create import CreateSpec, create_model
from store.errors import InvalidInput
from store.model import resolve
from store.modelfile import format_modelfile, parse, to_create_spec
from store.names import parse_name
from store.store import DRAFT_MEDIA, MODEL_MEDIA, PARAMS_MEDIA, Store
from server.errors import BadRequest
from tests.gguf_files import one_block_model, tiny_clip_projector, tiny_llama_f16


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "models")


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Weights (model.gguf), a draft of the same vocabulary (draft.gguf: other bytes, the same
    tokenizer), a model without a tokenizer and a projector."""
    folder = tmp_path_factory.mktemp("sources")
    tiny_llama_f16(folder / "model.gguf")
    tiny_llama_f16(folder / "draft.gguf", chat_template="{{ messages }}")
    (folder / "bare.gguf").write_bytes(one_block_model())
    tiny_clip_projector(folder / "mmproj.gguf")
    return folder


async def _create(store: Store, **fields: object) -> None:
    async for _ in create_model(store, CreateSpec(**fields)):  # type: ignore[arg-type]
        pass


def _upload(store: Store, path: Path) -> dict[str, str]:
    return {path.name: store.add_blob_file(path)}


def _config(store: Store, name: str) -> dict:
    manifest = store.read_manifest(parse_name(name))
    assert manifest is not None
    return orjson.loads(store.read_blob(manifest.config.digest))


async def test_draft_files_make_a_draft_layer_after_the_weights(store: Store,
                                                                sources: Path) -> None:
    draft = _upload(store, sources / "draft.gguf")
    await _create(store, model="m", files=_upload(store, sources / "model.gguf"),
                  draft_files=draft, parameters={"temperature": 0.0})
    manifest = store.read_manifest(parse_name("m"))
    assert manifest is not None
    assert [(layer.media_type, layer.digest) for layer in manifest.layers] == [
        (MODEL_MEDIA, manifest.layers[0].digest), (DRAFT_MEDIA, draft["draft.gguf"]),
        (PARAMS_MEDIA, manifest.layers[2].digest)]
    assert resolve(store, "m").draft_path == store.blob_path(draft["draft.gguf"])


async def test_the_config_names_the_draft_as_ollama_does(store: Store, sources: Path) -> None:
    await _create(store, model="m", files=_upload(store, sources / "model.gguf"),
                  draft_files=_upload(store, sources / "draft.gguf"))
    assert _config(store, "m")["draft"] == {"model_format": "gguf", "architecture": "llama"}


async def test_a_model_made_from_a_drafted_model_keeps_its_draft(store: Store,
                                                                 sources: Path) -> None:
    draft = _upload(store, sources / "draft.gguf")
    await _create(store, model="m", files=_upload(store, sources / "model.gguf"),
                  draft_files=draft)
    await _create(store, model="child", from_="m", system="Be brief.")
    assert resolve(store, "child").draft_path == store.blob_path(draft["draft.gguf"])
    assert _config(store, "child")["draft"] == _config(store, "m")["draft"]


async def test_a_draft_of_another_vocabulary_is_refused(store: Store, sources: Path) -> None:
    with pytest.raises(InvalidInput, match="does not share the model's vocabulary"):
        await _create(store, model="m", files=_upload(store, sources / "model.gguf"),
                      draft_files=_upload(store, sources / "bare.gguf"))
    assert store.read_manifest(parse_name("m")) is None


async def test_a_projector_is_no_draft(store: Store, sources: Path) -> None:
    with pytest.raises(InvalidInput, match="not a model"):
        await _create(store, model="m", files=_upload(store, sources / "model.gguf"),
                      draft_files=_upload(store, sources / "mmproj.gguf"))


async def test_two_draft_files_are_refused(store: Store, sources: Path) -> None:
    with pytest.raises(InvalidInput, match="one GGUF file, not 2"):
        await _create(store, model="m", files=_upload(store, sources / "model.gguf"),
                      draft_files={**_upload(store, sources / "draft.gguf"),
                                   **_upload(store, sources / "model.gguf")})


async def test_a_modelfile_draft_path_is_imported_as_the_draft(store: Store,
                                                               sources: Path) -> None:
    spec = to_create_spec(parse(f"FROM {sources / 'model.gguf'}\nDRAFT {sources / 'draft.gguf'}\n"),
                          "m")
    spec.import_dirs = (sources,)
    await _create(store, **vars(spec))
    draft = resolve(store, "m").draft_path
    assert draft is not None and draft.read_bytes() == (sources / "draft.gguf").read_bytes()


def test_show_prints_the_draft_after_the_adapters_as_ollama_does() -> None:
    text = format_modelfile("/w", adapters=["/a"], projectors=["/p"], draft="/d")
    assert text.splitlines()[:4] == ["FROM /w", "ADAPTER /a", "DRAFT /d", "FROM /p"]
    assert parse(text).drafts == ["/d"]


def test_draft_quantize_is_a_400_not_a_silent_no_op() -> None:
    with pytest.raises(BadRequest, match="draft_quantize is not supported"):
        CreateRequest.parse({"model": "m", "from": "x", "draft_quantize": "q4_K_M"})


async def test_the_config_blob_places_the_draft_as_gos_configv2_encodes_it(
        store: Store, sources: Path) -> None:
    # types/model/config.go: `Draft *Draft json:"draft,omitempty"` follows base_name and precedes
    # architecture and os; Draft's empty tensor_prefix and config are omitted.
    await _create(store, model="m", files=_upload(store, sources / "model.gguf"),
                  draft_files=_upload(store, sources / "draft.gguf"))
    manifest = store.read_manifest(parse_name("m"))
    assert manifest is not None
    blob = store.read_blob(manifest.config.digest)
    assert blob.endswith(b'"file_type":"F16","draft":{"model_format":"gguf","architecture":'
                         b'"llama"},"architecture":"amd64","os":"linux"}\n'), blob

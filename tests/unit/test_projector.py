"""Projector GGUFs: which file is one (Ollama's isProjectorGGUF) and whether llama.cpp can read
its metadata without aborting (every key clip.cpp reads, in the type it reads it as)."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest
from gguf import GGUFValueType

from store.errors import InvalidInput
from store.gguf import read_gguf
from store.projector import _READ_AS, check_projector, is_projector
from tests.gguf_files import gguf, kv_string, kv_u32, one_block_model, string, tiny_clip_projector

CLIP_CPP = Path("/work/ref/llama-cpp-python-src/vendor/llama.cpp/tools/mtmd")


@pytest.fixture(scope="module")
def projector(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_clip_projector(tmp_path_factory.mktemp("proj") / "mmproj.gguf")


def _header(tmp_path: Path, *kvs: bytes) -> Path:
    path = tmp_path / "x.gguf"
    path.write_bytes(gguf(list(kvs), []))
    return path


def kv_i32(key: str, value: int) -> bytes:
    return string(key) + struct.pack("<Ii", 5, value)


def kv_bool(key: str, value: bool) -> bytes:
    return string(key) + struct.pack("<I?", 7, value)


def test_the_test_projector_is_a_projector(projector: Path) -> None:
    assert is_projector(read_gguf(projector))


def test_a_language_model_is_not_a_projector(tmp_path: Path) -> None:
    path = tmp_path / "m.gguf"
    path.write_bytes(one_block_model())
    assert not is_projector(read_gguf(path))


@pytest.mark.parametrize("kind", ["mmproj", "projector"])
def test_general_type_makes_any_file_a_projector(tmp_path: Path, kind: str) -> None:
    path = _header(tmp_path, kv_string("general.architecture", "llama"),
                   kv_u32("llama.block_count", 2), kv_string("general.type", kind))
    assert is_projector(read_gguf(path))


def test_a_vision_tower_without_language_blocks_is_a_projector(tmp_path: Path) -> None:
    path = _header(tmp_path, kv_string("general.architecture", "qwen2vl"),
                   kv_u32("qwen2vl.vision.block_count", 32))
    assert is_projector(read_gguf(path))


def test_a_vision_tower_beside_language_blocks_is_a_model(tmp_path: Path) -> None:
    path = _header(tmp_path, kv_string("general.architecture", "gemma3"),
                   kv_u32("gemma3.block_count", 34), kv_u32("gemma3.vision.block_count", 27))
    assert not is_projector(read_gguf(path))


def test_a_vision_block_count_counts_only_as_a_u32_as_in_ollama(tmp_path: Path) -> None:
    path = _header(tmp_path, kv_string("general.architecture", "qwen2vl"),
                   kv_i32("qwen2vl.vision.block_count", 32))
    assert not is_projector(read_gguf(path))


def test_a_clip_file_with_an_encoder_flag_is_a_projector(tmp_path: Path) -> None:
    path = _header(tmp_path, kv_string("general.architecture", "clip"),
                   kv_bool("clip.has_vision_encoder", True))
    assert is_projector(read_gguf(path))


def test_a_clip_file_without_encoder_or_tower_is_not_a_projector(tmp_path: Path) -> None:
    path = _header(tmp_path, kv_string("general.architecture", "clip"),
                   kv_bool("clip.has_vision_encoder", False))
    assert not is_projector(read_gguf(path))


def test_the_test_projector_has_the_types_llama_cpp_reads(projector: Path) -> None:
    check_projector(read_gguf(projector), "mmproj.gguf")


@pytest.mark.parametrize(("key", "wrong", "named"), [
    ("clip.vision.image_size", GGUFValueType.INT32, "i32"),
    ("clip.vision.attention.layer_norm_epsilon", GGUFValueType.FLOAT64, "f64"),
    ("clip.has_vision_encoder", GGUFValueType.UINT8, "u8"),
    ("clip.vision.image_mean", GGUFValueType.FLOAT64, "arr[f64]"),
])
def test_a_key_of_another_type_than_llama_cpp_reads_is_refused(tmp_path: Path, key: str,
                                                                wrong: int, named: str) -> None:
    path = tiny_clip_projector(tmp_path / "bad.gguf", retype={key: wrong})
    with pytest.raises(InvalidInput, match=re.escape(f"{key} is of type {named}")):
        check_projector(read_gguf(path), "bad.gguf")


@pytest.mark.skipif(not CLIP_CPP.is_dir(), reason="needs llama.cpp's source")
def test_every_key_clip_cpp_reads_is_checked() -> None:
    """The table follows llama.cpp: each get_* call of clip.cpp, with its key from clip-impl.h."""
    kinds = {"u32": "u32", "i32": "i32", "f32": "f32", "bool": "bool", "string": "str",
             "arr_f32": "arr[f32]", "arr_int": "arr[i32]"}
    macros = dict(re.findall(r'#define (KEY_\w+)\s+"([^"]+)"', (CLIP_CPP / "clip-impl.h").read_text()))
    calls = set(re.findall(r"get_(u32|i32|f32|bool|string|arr_f32|arr_int)\("
                           r"(?:string_format\()?(KEY_\w+)", (CLIP_CPP / "clip.cpp").read_text()))
    wanted = {}
    for getter, macro in calls:
        for modality in ("vision", "audio", "gen.audio"):
            wanted[macros[macro].replace("%s", modality)] = kinds[getter]
    assert {key: _READ_AS.get(key) for key in wanted} == wanted

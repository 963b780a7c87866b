"""GGUF header reading: metadata and parameter count without loading weights.

A small streaming parser of our own: the `gguf` package's reader materialises every array
(262k tokenizer entries for Gemma) and took 20 s on this model; this one skips what it does not
keep and reads the header in well under a second.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

MAGIC = b"GGUF"

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
# Arrays longer than this (tokenizer vocabularies, merges) are only kept when asked for.
_SHORT_ARRAY = 16

FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S",
    29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4",
}


class NotGGUF(ValueError):
    pass


@dataclass
class GGUFInfo:
    metadata: dict[str, Any]
    parameter_count: int
    long_arrays: dict[str, int] = field(default_factory=dict)  # key -> length, when not kept

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    @property
    def file_type(self) -> str:
        ftype = self.metadata.get("general.file_type")
        return FILE_TYPES.get(ftype, "unknown") if isinstance(ftype, int) else "unknown"

    @property
    def context_length(self) -> int:
        return int(self.metadata.get(f"{self.architecture}.context_length", 0) or 0)

    @property
    def kv_bytes_per_token(self) -> int:
        """KV cache bytes one token takes at f16, over all layers (for memory estimates)."""
        arch, meta = self.architecture, self.metadata
        layers = int(meta.get(f"{arch}.block_count", 0) or 0)
        heads = _largest(meta.get(f"{arch}.attention.head_count", 0))
        kv_heads = _largest(meta.get(f"{arch}.attention.head_count_kv", heads))
        head_dim = int(meta.get(f"{arch}.embedding_length", 0) or 0) // heads if heads else 0
        k = int(meta.get(f"{arch}.attention.key_length", 0) or head_dim)
        v = int(meta.get(f"{arch}.attention.value_length", 0) or head_dim)
        return layers * kv_heads * (k + v) * 2


def _largest(value: Any) -> int:
    """Some architectures give per-layer head counts as an array."""
    if isinstance(value, list):
        return max((int(v) for v in value), default=0)
    return int(value or 0)


def is_gguf(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == MAGIC


@lru_cache(maxsize=64)
def cached_info(path: str) -> GGUFInfo:
    """Header of a stored blob; blobs are content-addressed, so a cached entry never goes stale."""
    return read_gguf(Path(path))


def read_gguf(path: Path, keep_long_arrays: bool = False) -> GGUFInfo:
    with open(path, "rb", buffering=1 << 20) as f:
        return _Parser(f, keep_long_arrays).parse()


class _Parser:
    def __init__(self, f: BinaryIO, keep_long_arrays: bool) -> None:
        self.f = f
        self.keep_long = keep_long_arrays
        self.long_arrays: dict[str, int] = {}

    def parse(self) -> GGUFInfo:
        if self.f.read(4) != MAGIC:
            raise NotGGUF("not a GGUF file")
        version = self._scalar(4)
        if version < 2:
            raise NotGGUF(f"unsupported GGUF version {version}")
        n_tensors = self._scalar(10)
        n_kv = self._scalar(10)
        metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = self._string()
            metadata[key] = self._value(key, self._scalar(4))
        params = 0
        for _ in range(n_tensors):
            self._skip_string()
            n_dims = self._scalar(4)
            dims = struct.unpack(f"<{n_dims}Q", self._read(8 * n_dims))
            self._read(12)  # ggml type (u32) and data offset (u64)
            count = 1
            for d in dims:
                count *= d
            params += count
        return GGUFInfo(metadata, params, self.long_arrays)

    def _read(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise NotGGUF("truncated GGUF header")
        return data

    def _scalar(self, vtype: int) -> Any:
        fmt = _SCALARS[vtype]
        return struct.unpack(fmt, self._read(struct.calcsize(fmt)))[0]

    def _string(self) -> str:
        return self._read(self._scalar(10)).decode("utf-8", errors="replace")

    def _skip_string(self) -> None:
        self.f.seek(self._scalar(10), 1)

    def _value(self, key: str, vtype: int) -> Any:
        if vtype == _STRING:
            return self._string()
        if vtype in _SCALARS:
            return self._scalar(vtype)
        if vtype != _ARRAY:
            raise NotGGUF(f"unknown GGUF value type {vtype} for {key}")
        item_type = self._scalar(4)
        count = self._scalar(10)
        if count <= _SHORT_ARRAY or self.keep_long:
            return [self._value(key, item_type) for _ in range(count)]
        self.long_arrays[key] = count
        self._skip_array(key, item_type, count)
        return []

    def _skip_array(self, key: str, item_type: int, count: int) -> None:
        if item_type in _SCALARS:
            self.f.seek(struct.calcsize(_SCALARS[item_type]) * count, 1)
        elif item_type == _STRING:
            for _ in range(count):
                self._skip_string()
        else:
            for _ in range(count):
                self._value(key, item_type)


def human_number(n: int) -> str:
    """Parameter counts the way Ollama prints them: 268.10M, 8.0B, 7.6B."""
    for scale, unit in ((1_000_000_000_000, "T"), (1_000_000_000, "B"), (1_000_000, "M"),
                        (1_000, "K")):
        if n >= scale:
            value = n / scale
            if value.is_integer():
                return f"{value:.0f}{unit}"
            return f"{value:.1f}{unit}" if unit in ("B", "T") else f"{value:.2f}{unit}"
    return str(n)

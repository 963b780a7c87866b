"""GGUF header reading: metadata and parameter count without loading weights.

A small streaming parser of our own: the `gguf` package's reader materialises every array
(262k tokenizer entries for Gemma) and took 20 s on this model; this one skips what it does not
keep and reads the header in well under a second. From `gguf` we take only the table of tensor
types and their block sizes, which the bounds checks need. Files come from clients, so every
length is checked against the file's size before it is trusted.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO

from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from store.errors import NotGGUF

MAGIC = b"GGUF"

_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?",
            10: "<Q", 11: "<q", 12: "<d"}
_STRING, _ARRAY = 8, 9
# GGUF value types by number, as llama.cpp's gguf_type_name spells them.
TYPE_NAMES = {0: "u8", 1: "i8", 2: "u16", 3: "i16", 4: "u32", 5: "i32", 6: "f32", 7: "bool",
              8: "str", 9: "arr", 10: "u64", 11: "i64", 12: "f64"}
_MAX_DIMS = 4  # GGML_MAX_DIMS
# Arrays longer than this (tokenizer vocabularies, merges) are only kept when asked for.
_SHORT_ARRAY = 16

FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S",
    29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4",
}


@dataclass(frozen=True)
class TensorBytes:
    """Where the weights' bytes lie, for memory estimates: which parts a GPU can take."""

    blocks: dict[int, int]  # blk.N.* tensors, by N
    token_embd: int  # the input embeddings
    rest: int  # the output head, final norm and anything else outside the blocks
    tied_output: bool  # no output.weight: the head reuses the embeddings

    def layers(self) -> tuple[int, ...]:
        return tuple(self.blocks[n] for n in sorted(self.blocks))


@dataclass(frozen=True)
class Tensor:
    """One tensor as /api/show lists it (Ollama's api.Tensor): its type as ggml names it."""

    name: str
    type: str
    shape: tuple[int, ...]


@dataclass
class GGUFInfo:
    metadata: dict[str, Any]
    parameter_count: int
    long_arrays: dict[str, int] = field(default_factory=dict)  # key -> length, when not kept
    blocks_with_tensors: int = 0  # distinct N among tensors named blk.N.*
    tensor_bytes: TensorBytes = field(default_factory=lambda: TensorBytes({}, 0, 0, False))
    # Each key's GGUF value type as TYPE_NAMES spells it; an array's as "arr[<item type>]".
    types: dict[str, str] = field(default_factory=dict)
    tensors: tuple[Tensor, ...] = ()

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    @property
    def file_type(self) -> str:
        ftype = self.metadata.get("general.file_type")
        return FILE_TYPES.get(ftype, "unknown") if isinstance(ftype, int) else "unknown"

    @property
    def n_vocab(self) -> int:
        """Tokenizer vocabulary size (0 if the file does not say): valid token ids lie below."""
        tokens = self.metadata.get("tokenizer.ggml.tokens")
        return self.long_arrays.get("tokenizer.ggml.tokens", len(tokens) if tokens else 0)

    @property
    def context_length(self) -> int:
        return int(self.metadata.get(f"{self.architecture}.context_length", 0) or 0)

    @property
    def embedding_length(self) -> int:
        return int(self.metadata.get(f"{self.architecture}.embedding_length", 0) or 0)

    @property
    def head_count(self) -> int:
        return _largest(self.metadata.get(f"{self.architecture}.attention.head_count", 0))

    @property
    def kv_bytes_per_token(self) -> int:
        """KV cache bytes one token takes at f16, over all layers (for memory estimates)."""
        arch, meta = self.architecture, self.metadata
        layers = int(meta.get(f"{arch}.block_count", 0) or 0)
        heads = self.head_count
        kv_heads = _largest(meta.get(f"{arch}.attention.head_count_kv", heads))
        head_dim = self.embedding_length // heads if heads else 0
        k = int(meta.get(f"{arch}.attention.key_length", 0) or head_dim)
        v = int(meta.get(f"{arch}.attention.value_length", 0) or head_dim)
        return layers * kv_heads * (k + v) * 2


def _largest(value: Any) -> int:
    """Some architectures give per-layer head counts as an array."""
    if isinstance(value, list):
        return max((int(v) for v in value), default=0)
    return int(value or 0)


@lru_cache(maxsize=64)
def cached_info(path: str) -> GGUFInfo:
    """Header of a stored blob; blobs are content-addressed, so a cached entry never goes stale."""
    return read_gguf(Path(path))


def read_gguf(path: Path, keep_long_arrays: bool = False) -> GGUFInfo:
    with open(path, "rb", buffering=1 << 20) as f:
        return _Parser(f, path.stat().st_size, keep_long_arrays).parse()


def validate_gguf(path: Path) -> GGUFInfo:
    """The header of a file about to become a model, checked so that llama.cpp never sees a file
    that would crash or exhaust it: every length within the file, every tensor's data inside it,
    and a block count that the tensors back up."""
    info = read_gguf(path)
    arch = info.architecture
    if not arch:
        raise NotGGUF("GGUF file has no general.architecture")
    declared = info.metadata.get(f"{arch}.block_count")
    if declared is not None and (not isinstance(declared, int) or isinstance(declared, bool)
                                 or not 0 < declared <= info.blocks_with_tensors):
        raise NotGGUF(f"GGUF {arch}.block_count is {declared!r} but the file holds tensors "
                      f"for {info.blocks_with_tensors} blocks")
    return info


class _Parser:
    """Reads a GGUF header, refusing any length that points past the end of the file."""

    def __init__(self, f: BinaryIO, file_size: int, keep_long_arrays: bool) -> None:
        self.f = f
        self.size = file_size
        self.keep_long = keep_long_arrays
        self.long_arrays: dict[str, int] = {}
        self.types: dict[str, str] = {}
        self._item_type = ""  # the item type of the array last read

    def parse(self) -> GGUFInfo:
        if self.f.read(4) != MAGIC:
            raise NotGGUF("not a GGUF file")
        version = self._scalar(4)
        if version not in (2, 3):
            raise NotGGUF(f"unsupported GGUF version {version}")
        n_tensors = self._count(self._scalar(10), 8, "tensor count")
        n_kv = self._count(self._scalar(10), 8, "metadata count")
        metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = self._string()
            vtype = self._scalar(4)
            metadata[key] = self._value(key, vtype)
            self.types[key] = f"arr[{self._item_type}]" if vtype == _ARRAY else TYPE_NAMES[vtype]
        alignment = metadata.get("general.alignment", 32)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise NotGGUF(f"invalid GGUF alignment {alignment!r}")
        params, blocks, extents, tensors = 0, set(), [], []
        sizes = _Sizes()
        for _ in range(n_tensors):
            name = self._string()
            tensor, count, nbytes = self._tensor_shape(name)
            tensors.append(tensor)
            offset = self._scalar(10)
            if offset % alignment:
                raise NotGGUF(f"tensor {name} is not aligned")
            extents.append((name, offset, nbytes))
            params += count
            sizes.add(name, nbytes)
            if name.startswith("blk."):
                blocks.add(name.split(".", 2)[1])
        data_start = -(-self.f.tell() // alignment) * alignment
        for name, offset, nbytes in extents:
            if data_start + offset + nbytes > self.size:
                raise NotGGUF(f"truncated GGUF file: data of tensor {name} lies past its end")
        return GGUFInfo(metadata, params, self.long_arrays, len(blocks), sizes.result(),
                        self.types, tuple(tensors))

    def _tensor_shape(self, name: str) -> tuple[Tensor, int, int]:
        """The tensor, its element count and its data bytes, of one tensor info record."""
        n_dims = self._scalar(4)
        if not 1 <= n_dims <= _MAX_DIMS:
            raise NotGGUF(f"tensor {name} has {n_dims} dimensions (at most {_MAX_DIMS})")
        dims = struct.unpack(f"<{n_dims}Q", self._read(8 * n_dims))
        ggml_type = self._scalar(4)
        try:
            block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
        except (ValueError, KeyError):
            raise NotGGUF(f"tensor {name} has unknown type {ggml_type}") from None
        count = 1
        for d in dims:
            count *= d
        if count == 0 or dims[0] % block or count > self.size * block:
            raise NotGGUF(f"tensor {name} has an invalid shape {list(dims)}")
        tensor = Tensor(name, GGMLQuantizationType(ggml_type).name, tuple(dims))
        return tensor, count, count // block * type_size

    def _count(self, n: int, min_bytes: int, what: str) -> int:
        """A count of items each taking at least `min_bytes`: it must fit in what is left."""
        if n * min_bytes > self.size - self.f.tell():
            raise NotGGUF(f"truncated or invalid GGUF file: {what} {n} does not fit in it")
        return n

    def _read(self, n: int) -> bytes:
        data = self.f.read(n)
        if len(data) != n:
            raise NotGGUF("truncated GGUF header")
        return data

    def _scalar(self, vtype: int) -> Any:
        fmt = _SCALARS[vtype]
        return struct.unpack(fmt, self._read(struct.calcsize(fmt)))[0]

    def _string(self) -> str:
        return self._read(self._count(self._scalar(10), 1, "string length")).decode(
            "utf-8", errors="replace")

    def _skip_strings(self, count: int) -> None:
        """Skips `count` strings, walking their lengths in pieces read a megabyte at a time (a
        vocabulary is 262k strings: one read and seek each took 0.7 s for Gemma)."""
        base = self.f.tell()  # the file offset of buf[0]
        buf, pos = b"", 0
        for _ in range(count):
            if pos + 8 > len(buf):
                base += pos
                self.f.seek(base)
                buf, pos = self.f.read(1 << 20), 0
                if len(buf) < 8:
                    raise NotGGUF("truncated GGUF header")
            (length,) = struct.unpack_from("<Q", buf, pos)
            pos += 8
            if length > self.size - (base + pos):
                raise NotGGUF(f"truncated or invalid GGUF file: string length {length} does "
                              "not fit in it")
            pos += length
        self.f.seek(base + pos)

    def _value(self, key: str, vtype: int) -> Any:
        if vtype == _STRING:
            return self._string()
        if vtype in _SCALARS:
            return self._scalar(vtype)
        if vtype != _ARRAY:
            raise NotGGUF(f"unknown GGUF value type {vtype} for {key}")
        item_type = self._scalar(4)
        if item_type not in _SCALARS and item_type != _STRING:
            raise NotGGUF(f"unsupported GGUF array type {item_type} for {key}")
        self._item_type = TYPE_NAMES[item_type]
        item_bytes = struct.calcsize(_SCALARS[item_type]) if item_type in _SCALARS else 8
        count = self._count(self._scalar(10), item_bytes, f"array length for {key}")
        if count <= _SHORT_ARRAY or self.keep_long:
            return [self._value(key, item_type) for _ in range(count)]
        self.long_arrays[key] = count
        if item_type == _STRING:
            self._skip_strings(count)
        else:
            self.f.seek(item_bytes * count, 1)
        return []


class _Sizes:
    """Sums tensor bytes by where llama.cpp may put them."""

    def __init__(self) -> None:
        self.blocks: dict[int, int] = {}
        self.token_embd = self.rest = 0
        self.has_output = False

    def add(self, name: str, nbytes: int) -> None:
        block = name.split(".", 2)[1] if name.startswith("blk.") else ""
        if block.isdigit():
            self.blocks[int(block)] = self.blocks.get(int(block), 0) + nbytes
        elif name.startswith("token_embd."):
            self.token_embd += nbytes
        else:
            self.rest += nbytes
            self.has_output |= name == "output.weight"

    def result(self) -> TensorBytes:
        return TensorBytes(self.blocks, self.token_embd, self.rest, not self.has_output)


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

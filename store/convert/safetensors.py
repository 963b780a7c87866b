"""Reading safetensors files with numpy: an 8-byte little-endian header length, a JSON header
naming each tensor's dtype, shape and byte range, then the raw little-endian data.

The format is small enough that a parser of our own beats a dependency; like the `gguf` reader
in `store/gguf.py` it checks every range against the file before trusting it, since a model
directory is user input.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from store.convert import ConvertError

# The safetensors library refuses headers above 100 MB; so do we.
MAX_HEADER = 100 * 1024 * 1024

ITEM_SIZES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
              "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


@dataclass(frozen=True)
class Tensor:
    file: Path
    dtype: str
    shape: tuple[int, ...]
    offset: int  # from the start of the file
    nbytes: int

    def load(self) -> np.ndarray:
        """The tensor as float32, or float16 when stored so (bfloat16 widens exactly to float32,
        as llama.cpp's converter turns every other type into float32)."""
        if self.dtype not in ("F32", "F16", "BF16"):
            raise ConvertError(f"{self.file.name}: tensor of type {self.dtype} where a float was expected")
        raw = np.fromfile(self.file, dtype=np.uint8, count=self.nbytes, offset=self.offset)
        if self.dtype == "BF16":
            return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32).reshape(self.shape)
        return raw.view("<f4" if self.dtype == "F32" else "<f2").reshape(self.shape)


def read_tensors(path: Path) -> dict[str, Tensor]:
    """The tensors a safetensors file holds, by name in sorted order (as the safetensors library,
    and so llama.cpp's converter, lists them)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        prefix = f.read(8)
        if len(prefix) < 8:
            raise ConvertError(f"{path.name}: not a safetensors file (too short)")
        header_len = int.from_bytes(prefix, "little")
        if header_len > min(MAX_HEADER, size - 8):
            raise ConvertError(f"{path.name}: not a safetensors file (header of {header_len} bytes)")
        try:
            header = json.loads(f.read(header_len))
        except ValueError as e:
            raise ConvertError(f"{path.name}: not a safetensors file (header: {e})") from e
    if not isinstance(header, dict):
        raise ConvertError(f"{path.name}: not a safetensors file (header is not an object)")
    start, data_size = 8 + header_len, size - 8 - header_len
    tensors = {name: _tensor(path, name, entry, start, data_size)
               for name, entry in header.items() if name != "__metadata__"}
    return dict(sorted(tensors.items()))


def _tensor(path: Path, name: str, entry: object, start: int, data_size: int) -> Tensor:
    try:
        dtype, shape = entry["dtype"], tuple(entry["shape"])  # type: ignore[index]
        begin, end = entry["data_offsets"]  # type: ignore[index]
        valid = (dtype in ITEM_SIZES and all(isinstance(n, int) and n >= 0 for n in shape)
                 and isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end <= data_size
                 and end - begin == math.prod(shape) * ITEM_SIZES[dtype])
    except (TypeError, KeyError, ValueError):
        valid = False
    if not valid:
        raise ConvertError(f"{path.name}: tensor {name!r} has a malformed or out-of-range entry")
    return Tensor(path, dtype, shape, start + begin, end - begin)

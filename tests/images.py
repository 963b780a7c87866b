"""Small images for tests, written without Pillow: PNG by hand (zlib + CRC chunks)."""

from __future__ import annotations

import struct
import zlib

import numpy as np


def png(width: int = 32, height: int = 32, seed: int = 0) -> bytes:
    """An RGB PNG of random pixels; another seed gives another picture."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return png_of(pixels)


def png_of(pixels: np.ndarray) -> bytes:
    """The PNG of an (height, width, 3) uint8 array."""
    height, width, _ = pixels.shape
    rows = b"".join(b"\0" + pixels[y].tobytes() for y in range(height))  # filter 0 per row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
            + chunk(b"IEND", b""))

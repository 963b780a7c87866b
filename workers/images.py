"""Image files as requests carry them: the bounds, the header check the front end makes before
a worker sees one, and the id that stands for an image among a sequence's tokens. Pure Python
and Pillow: no llama.cpp here (workers/vision.py has the projector)."""

from __future__ import annotations

import hashlib
import io

from PIL import Image, UnidentifiedImageError

# One image's file at most (OpenAI's limit); larger ones are refused before decoding.
MAX_IMAGE_BYTES = 20 << 20
# Pixels of one image at most: a small file can unpack into gigabytes (a decompression bomb).
# 8192 x 4096 is far above what a projector looks at (it resizes to a few hundred pixels).
MAX_IMAGE_PIXELS = 8192 * 4096
FORMATS = ("PNG", "JPEG", "WEBP", "GIF")


class ImageError(ValueError):
    """The request's image cannot be used: a 400."""


def check_image(data: bytes) -> tuple[int, int]:
    """(width, height) from the file's header, without decoding it; ImageError if it is not a
    PNG, JPEG, WebP or GIF, or is too large."""
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageError(f"image of {len(data)} bytes is larger than the "
                         f"{MAX_IMAGE_BYTES >> 20} MiB allowed")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            kind = image.format or ""
    except Image.DecompressionBombError:  # Pillow's own, far larger bound
        raise ImageError(_too_large("image")) from None
    except UnidentifiedImageError:  # its message names an in-memory file object
        raise ImageError("invalid image data: not a PNG, JPEG, WebP or GIF file") from None
    except (OSError, ValueError) as exc:
        raise ImageError(f"invalid image data: {exc}") from None
    if kind not in FORMATS:
        raise ImageError(f"unsupported image format {kind}: PNG, JPEG, WebP or GIF")
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageError(_too_large(f"image of {width}x{height} pixels"))
    return width, height


def _too_large(what: str) -> str:
    return f"{what} is larger than the {MAX_IMAGE_PIXELS // 1_000_000} megapixels allowed"


def decode_rgb(data: bytes) -> Image.Image:
    """The image's (first frame's) pixels as RGB."""
    check_image(data)  # the front end checked; a file may still lie about its size
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.seek(0)
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, EOFError) as exc:
        raise ImageError(f"invalid image data: {exc}") from None


def placeholder(data: bytes) -> int:
    """The id that stands for each of this image's positions among a sequence's tokens:
    negative (never a vocabulary id) and the same for the same bytes."""
    return -1 - int.from_bytes(hashlib.sha256(data).digest()[:4], "little") % (2**31 - 1)

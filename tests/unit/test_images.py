"""Images as requests carry them (workers/images.py), where a prompt puts them (workers/prompt.py)
and which paths in a CLI prompt are attached (cli/attachments.py)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image

from cli.attachments import extract_images
from tests.images import png
from workers.images import MAX_IMAGE_BYTES, ImageError, check_image, decode_rgb, placeholder
from workers.prompt import with_markers


def encoded(kind: str, size: tuple[int, int] = (8, 6)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(out, kind)
    return out.getvalue()


@pytest.mark.parametrize("kind", ["PNG", "JPEG", "WEBP", "GIF"])
def test_png_jpeg_webp_and_gif_are_read_by_their_header(kind: str) -> None:
    assert check_image(encoded(kind)) == (8, 6)


def test_another_image_format_is_refused_naming_the_ones_taken() -> None:
    with pytest.raises(ImageError, match="unsupported image format BMP"):
        check_image(encoded("BMP"))


def test_a_file_over_the_byte_limit_is_refused_before_it_is_read() -> None:
    with pytest.raises(ImageError, match="larger than the 20 MiB allowed"):
        check_image(b"\x89PNG" + bytes(MAX_IMAGE_BYTES))


def test_a_gifs_first_frame_is_what_the_projector_sees() -> None:
    frames = [Image.new("RGB", (4, 4), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:])
    assert decode_rgb(out.getvalue()).getpixel((0, 0)) == (255, 0, 0)


def test_an_images_placeholder_is_negative_and_follows_its_bytes() -> None:
    assert placeholder(png(seed=1)) == placeholder(png(seed=1)) < 0
    assert placeholder(png(seed=1)) != placeholder(png(seed=2))


def test_markers_replace_img_tags_in_order_and_otherwise_go_in_front_as_ollamas_do() -> None:
    tagged = {"role": "user", "content": "left [img] right [img]", "images": ["a", "b"]}
    untagged = {"role": "user", "content": "both", "images": ["a", "b"]}
    assert [m["content"] for m in with_markers([tagged, untagged], "<M>")] == \
        ["left <M> right <M>", "<M><M>both"]


def test_the_cli_attaches_an_existing_image_path_and_takes_it_out_of_the_prompt(
        tmp_path: Path) -> None:
    picture = tmp_path / "cat.png"
    picture.write_bytes(png())
    prompt, images = extract_images(f"what is in {picture} and /not/here.png?")
    assert prompt == "what is in  and /not/here.png?"
    assert [base64.b64decode(i) for i in images] == [png()]

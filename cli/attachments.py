"""Image files named in a prompt, attached as Ollama's CLI attaches them to a vision model's
request (cmd/interactive.go: extractFileData): a path that starts with /, ./ or a drive and ends
in an image extension is read if it exists, sent in `images` and taken out of the prompt."""

from __future__ import annotations

import base64
import re
import sys
from pathlib import Path

from cli.client import CLIError

# Ollama's pattern: it also catches words that are no paths; only existing files count.
_PATH = re.compile(r"(?:[a-zA-Z]:)?(?:\./|/|\\)[\S\\ ]+?\.(?i:jpg|jpeg|png|webp)\b")
_ESCAPES = {f"\\{c}": c for c in " ()[]{}$&;'\\*?~"}
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")  # JPEG, PNG; WebP is RIFF....WEBP
MAX_FILE_BYTES = 100 << 20  # Ollama's limit


def extract_images(prompt: str) -> tuple[str, list[str]]:
    """The prompt without the image paths it names, and those images in base64."""
    images = []
    for found in _PATH.findall(prompt):
        path = Path(_unescaped(found))
        if not path.is_file():
            continue
        images.append(base64.b64encode(_image_file(path)).decode())
        sys.stderr.write(f"Added image '{path}'\n")
        prompt = prompt.replace(f"'{path}'", "").replace(f"'{found}'", "").replace(found, "")
    return prompt.strip(), images


def _unescaped(path: str) -> str:
    return re.sub(r"\\.", lambda m: _ESCAPES.get(m.group(0), m.group(0)), path)


def _image_file(path: Path) -> bytes:
    data = path.read_bytes()
    if len(data) > MAX_FILE_BYTES:
        raise CLIError("file size exceeds maximum limit (100MB)")
    if not (data.startswith(_SIGNATURES) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")):
        raise CLIError(f"invalid file type: {path}")
    return data

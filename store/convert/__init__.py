"""Converting Hugging Face safetensors model directories to GGUF, as Ollama's create does.

Ollama's `/api/create` imports a directory of safetensors weights for the architectures its Go
`convert/` package knows; this package is corral's counterpart, without torch or transformers.
Each converter writes what llama.cpp's own `convert_hf_to_gguf.py` writes for that model (same
metadata, tensor names, tensor types and tokenizer), so llama.cpp loads the result and computes
what it would compute from its own conversion. So far: BERT encoders (`bert.convert_bert`).

A directory counts as a model to convert when it holds a `config.json` naming its architecture
and at least one `*.safetensors` file; everything else a converter needs (tokenizer files,
sentence-transformers pooling config) is checked by that converter, which names what is missing.
"""

from __future__ import annotations

import json
from pathlib import Path

from store.errors import InvalidInput


class ConvertError(InvalidInput):
    """A directory that cannot be converted: missing files, an unsupported architecture, or
    weights and configuration that do not fit together."""


def is_safetensors_dir(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def detect(path: Path) -> str | None:
    """The Hugging Face architecture a safetensors model directory declares (`BertModel`, ...),
    or None when `path` is not such a directory."""
    if not is_safetensors_dir(path):
        return None
    try:
        architectures = json.loads((path / "config.json").read_text(encoding="utf-8")).get("architectures")
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(architectures, list) and architectures and isinstance(architectures[0], str):
        return architectures[0]
    return None


def convert(src: Path, dst: Path) -> str:
    """Converts the model directory `src` to a GGUF file at `dst`; the architecture it was."""
    from store.convert.bert import ARCHITECTURES, convert_bert  # noqa: PLC0415 - import cycle

    architecture = detect(src)
    if architecture is None:
        raise ConvertError("the files are not a safetensors model: config.json naming its "
                           "architecture and *.safetensors weights are needed")
    if architecture not in ARCHITECTURES:
        raise ConvertError(f"unsupported architecture {architecture!r}: corral converts "
                           f"{', '.join(sorted(ARCHITECTURES))}")
    convert_bert(src, dst)
    return architecture

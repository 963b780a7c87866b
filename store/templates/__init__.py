"""Our named Go prompt templates, one per well-known chat format, with their default parameters.

`<name>.gotmpl` is an Ollama-style Go template (rendered by workers.prompt.render_go) and
`<name>.json` its default parameters (stop strings). A model created from a bare GGUF gets the
template that `match_template` picks from the GGUF's `tokenizer.chat_template` (see `detect`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from store.templates.match import RULES, match_template

NAMES: tuple[str, ...] = tuple(sorted({rule.name for rule in RULES}))


@dataclass(frozen=True)
class NamedTemplate:
    name: str
    template: str                 # Go template text
    parameters: dict[str, Any]    # default parameters, e.g. {"stop": [...]}


def _file(filename: str) -> str:
    return resources.files(__name__).joinpath(filename).read_text(encoding="utf-8")


@lru_cache(maxsize=None)
def template(name: str) -> str:
    """The Go template called `name`; KeyError if there is none."""
    if name not in NAMES:
        raise KeyError(name)
    return _file(f"{name}.gotmpl")


def parameters(name: str) -> dict[str, Any]:
    """Default parameters of template `name` (a fresh dict); KeyError if there is none."""
    if name not in NAMES:
        raise KeyError(name)
    return dict(json.loads(_file(f"{name}.json")))


def detect(chat_template: str | None) -> NamedTemplate | None:
    """Our template (with its parameters) for a GGUF's Jinja chat template, or None."""
    name = match_template(chat_template or "")
    if name is None:
        return None
    return NamedTemplate(name, template(name), parameters(name))


__all__ = ["NAMES", "NamedTemplate", "RULES", "detect", "match_template", "parameters", "template"]

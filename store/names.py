"""Model names: the one parser and validator, `[host/][namespace/]model[:tag]`.

Defaults follow Ollama: host `registry.ollama.ai`, namespace `library`, tag `latest`. Every part
is checked whole against Ollama's character set before it becomes a path under the model store:
no part can be `..`, hold a `/`, or carry a control character.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from store.errors import InvalidName

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

# Ollama's rules (types/model/name.go): ASCII letters, digits, `_` and `-`; the first character a
# letter, digit or `_`; `.` anywhere but the namespace; `:` (a port) only in the host. Matched
# whole with fullmatch, so no trailing newline or control character gets through.
_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,349}")
_NAMESPACE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,79}")
_MODEL_OR_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,79}")


@dataclass(frozen=True, slots=True)
class ModelName:
    host: str
    namespace: str
    model: str
    tag: str

    @property
    def display(self) -> str:
        """Shortest form that still names the model (what /api/tags and /api/ps show)."""
        prefix = ""
        if self.host != DEFAULT_HOST:
            prefix = f"{self.host}/{self.namespace}/"
        elif self.namespace != DEFAULT_NAMESPACE:
            prefix = f"{self.namespace}/"
        return f"{prefix}{self.model}:{self.tag}"

    @property
    def full(self) -> str:
        """Every part written out, as Ollama names a model in its capability errors."""
        return f"{self.host}/{self.namespace}/{self.model}:{self.tag}"

    @property
    def parts(self) -> tuple[str, str, str, str]:
        return self.host, self.namespace, self.model, self.tag


INVALID = "invalid model name"  # Ollama's errtypes.InvalidModelNameErrMsg


def parse_name(text: str) -> ModelName:
    """`[host/][namespace/]model[:tag]`, split at the last separators as Ollama does."""
    if not isinstance(text, str) or not text:
        raise InvalidName("model name is required")
    raw, tag = text, DEFAULT_TAG
    if raw.rfind(":") > raw.rfind("/"):
        raw, tag = raw.rsplit(":", 1)
    pieces = raw.split("/")
    if len(pieces) > 3:
        raise InvalidName(INVALID)
    model = pieces[-1]
    namespace = pieces[-2] if len(pieces) >= 2 else DEFAULT_NAMESPACE
    host = pieces[-3] if len(pieces) == 3 else DEFAULT_HOST
    if not (_HOST.fullmatch(host) and _NAMESPACE.fullmatch(namespace)
            and _MODEL_OR_TAG.fullmatch(model) and _MODEL_OR_TAG.fullmatch(tag)):
        raise InvalidName(INVALID)
    return ModelName(host, namespace, model, tag)

"""Model names: the one parser and validator, `[host/][namespace/]model[:tag]`.

Defaults follow Ollama: host `registry.ollama.ai`, namespace `library`, tag `latest`. Every part
is checked against a strict character set before it becomes a path under the model store, which
is what keeps `..` and `/` tricks out of the file system.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
DEFAULT_TAG = "latest"

_HOST = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,349}(:[0-9]{1,5})?$")
_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,79}$")


class InvalidName(ValueError):
    pass


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
    def parts(self) -> tuple[str, str, str, str]:
        return self.host, self.namespace, self.model, self.tag


def parse_name(text: str) -> ModelName:
    if not isinstance(text, str) or not text.strip():
        raise InvalidName("model name is required")
    raw = text.strip()
    if "@" in raw:  # a pinned digest is accepted and ignored, as Ollama does for local names
        raw = raw.split("@", 1)[0]
    tag = DEFAULT_TAG
    slash = raw.rfind("/")
    colon = raw.rfind(":")
    if colon > slash:
        raw, tag = raw[:colon], raw[colon + 1:]
    pieces = raw.split("/")
    if len(pieces) > 3 or any(p == "" for p in pieces):
        raise InvalidName(f'invalid model name "{text}"')
    model = pieces[-1]
    namespace = pieces[-2] if len(pieces) >= 2 else DEFAULT_NAMESPACE
    host = pieces[-3] if len(pieces) == 3 else DEFAULT_HOST
    if not (_HOST.match(host) and _PART.match(namespace) and _PART.match(model)
            and _TAG.match(tag)) or ".." in (host + namespace + model + tag):
        raise InvalidName(f'invalid model name "{text}"')
    return ModelName(host, namespace, model, tag)

"""GET /api/openapi.json: the API's OpenAPI 3.1 description (server/openapi.yaml, which
docs/openapi.yaml links to), as JSON. The YAML ships in the package and is turned into JSON
bytes once, at import; every request gets those bytes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import yaml
from aiohttp import web

PATH = Path(__file__).resolve().parents[1] / "openapi.yaml"


def load(path: Path = PATH) -> dict[str, Any]:
    """The document as a dict (libyaml's parser when PyYAML has it: the file is large)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with path.open("rb") as f:
        document = yaml.load(f, Loader=loader)  # noqa: S506 - a safe loader
    if not isinstance(document, dict):
        raise ValueError(f"{path} does not hold an OpenAPI document")
    return document


_JSON = orjson.dumps(load())


async def document(request: web.Request) -> web.Response:
    return web.Response(body=_JSON, content_type="application/json")

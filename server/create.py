"""Creating a model: from GGUF blobs (`files`) or from another model (`from`), plus Modelfile
layers (template, system, parameters, license, messages).

Everything is validated before the first byte is written; then layers are stored, the config
blob is written and the manifest replaces the old one atomically. `plan_create` returns the
status lines Ollama clients show, and is the one code path for /api/create and for registering
the embedded default model.
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from server import errors
from server.gguf import NotGGUF, human_number, read_gguf
from server.modelspec import parse_or_400, resolve
from server.names import ModelName
from server.schemas import CreateRequest
from server.store import (CONFIG_MEDIA_TYPE, LICENSE_MEDIA, MESSAGES_MEDIA, MODEL_MEDIA,
                          PARAMS_MEDIA, SYSTEM_MEDIA, TEMPLATE_MEDIA, InvalidDigest, Layer, Store,
                          normalize_digest)

_REPLACED_BY_REQUEST = {TEMPLATE_MEDIA, SYSTEM_MEDIA, PARAMS_MEDIA, MESSAGES_MEDIA}


def create_model(store: Store, req: CreateRequest) -> list[str]:
    """Creates or replaces the model; returns the status lines in order. Raises APIError."""
    name = parse_or_400(req.model)
    statuses: list[str] = []
    if req.files:
        statuses.append("parsing GGUF")
        base_layers, config, base_params = _from_files(store, req.files), None, {}
    elif req.from_:
        statuses.append("reading model metadata")
        base = _resolve_from(store, req.from_)
        base_layers = [lay for lay in base.manifest.layers if lay.media_type not in _REPLACED_BY_REQUEST
                       or _kept(lay.media_type, req)]
        config, base_params = dict(base.config), base.params
        config["parent_model"] = base.name.display
    else:
        raise errors.BadRequest("neither 'from' or 'files' was specified")

    model_layer = next((lay for lay in base_layers if lay.media_type == MODEL_MEDIA), None)
    if model_layer is None:
        raise errors.BadRequest("no model weights in the base model")
    if config is None:
        config = _config_from_gguf(store, model_layer)

    layers = list(base_layers)
    statuses += [f"using existing layer {lay.digest}" for lay in layers]
    contents: list[tuple[bytes, str]] = []
    if req.template is not None:
        contents.append((req.template.encode(), TEMPLATE_MEDIA))
    if req.system is not None:
        contents.append((req.system.encode(), SYSTEM_MEDIA))
    if req.parameters:
        contents.append((orjson.dumps({**base_params, **req.parameters}), PARAMS_MEDIA))
    if req.messages is not None:
        contents.append((orjson.dumps(req.messages), MESSAGES_MEDIA))
    contents += [(text.encode(), LICENSE_MEDIA) for text in req.licenses]
    if req.licenses:
        layers = [lay for lay in layers if lay.media_type != LICENSE_MEDIA]
    for data, media_type in contents:
        existed = store.has_blob(f"sha256:{hashlib.sha256(data).hexdigest()}")
        layer = store.add_blob_bytes(data, media_type)
        statuses.append(f"{'using existing' if existed else 'creating new'} layer {layer.digest}")
        layers.append(layer)

    config["rootfs"] = {"type": "layers", "diff_ids": [lay.digest for lay in layers]}
    config_layer = store.add_blob_bytes(orjson.dumps(config), CONFIG_MEDIA_TYPE)
    statuses.append("writing manifest")
    _write_if_changed(store, name, config_layer, layers)
    statuses.append("success")
    return statuses


def _kept(media_type: str, req: CreateRequest) -> bool:
    """Whether a base model's Modelfile layer survives (the request does not replace it)."""
    replaced = {TEMPLATE_MEDIA: req.template is not None, SYSTEM_MEDIA: req.system is not None,
                PARAMS_MEDIA: bool(req.parameters), MESSAGES_MEDIA: req.messages is not None}
    return not replaced[media_type]


def _resolve_from(store: Store, text: str):  # type: ignore[no-untyped-def]
    try:
        return resolve(store, text)
    except errors.NotFound:
        raise errors.NotFound(f'base model "{text}" not found') from None


def _from_files(store: Store, files: dict[str, str]) -> list[Layer]:
    layers = []
    for filename, digest in files.items():
        try:
            digest = normalize_digest(digest)
        except InvalidDigest as exc:
            raise errors.BadRequest(str(exc)) from None
        if not store.has_blob(digest):
            raise errors.BadRequest(f"blob {digest} for {filename} not found; "
                                    f"upload it with POST /api/blobs/{digest}")
        if not _looks_gguf(store, digest):
            raise errors.BadRequest(f"unsupported file {filename}: only GGUF models can be imported")
        layers.append(Layer(MODEL_MEDIA, digest, store.blob_path(digest).stat().st_size))
    if len(layers) != 1:
        raise errors.BadRequest("exactly one GGUF file is required")
    return layers


def _looks_gguf(store: Store, digest: str) -> bool:
    with open(store.blob_path(digest), "rb") as f:
        return f.read(4) == b"GGUF"


def _config_from_gguf(store: Store, model_layer: Layer) -> dict[str, Any]:
    try:
        info = read_gguf(store.blob_path(model_layer.digest))
    except NotGGUF as exc:
        raise errors.BadRequest(f"invalid GGUF file: {exc}") from None
    arch = info.architecture
    return {
        "model_format": "gguf",
        "model_family": arch,
        "model_families": [arch] if arch else [],
        "model_type": human_number(info.parameter_count),
        "file_type": info.file_type,
        "architecture": "amd64",
        "os": "linux",
    }


def _write_if_changed(store: Store, name: ModelName, config: Layer, layers: list[Layer]) -> None:
    """Re-creating a model identically leaves its manifest (and modified_at) untouched."""
    current = store.read_manifest(name)
    if current is not None and current.config == config and list(current.layers) == layers:
        return
    store.write_manifest(name, config, layers)

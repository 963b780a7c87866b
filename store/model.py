"""A stored model, resolved from its name: the weights path (and its projector's and draft
model's, if it has them) plus Modelfile layers.

This is what the front end reads on each request, so a re-created model takes effect on the
next request without a restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from store.errors import InvalidName, NotGGUF, model_not_found
from store.gguf import cached_info
from store.names import ModelName, parse_name
from store.store import (ADAPTER_MEDIA, CONFIG_MEDIA_TYPE, DRAFT_MEDIA, LICENSE_MEDIA,
                         MESSAGES_MEDIA, MODEL_MEDIA, PARAMS_MEDIA, PROJECTOR_MEDIA, SYSTEM_MEDIA,
                         TEMPLATE_MEDIA, Manifest, Store)
from workers.template.analysis import analyze


@dataclass(frozen=True)
class ModelSpec:
    name: ModelName
    manifest: Manifest
    model_path: Path
    template: str
    system: str
    params: dict[str, Any]
    messages: list[dict[str, Any]]
    licenses: list[str]
    config: dict[str, Any]
    adapter_paths: list[Path]  # LoRA adapters applied on top of the weights
    projector_path: Path | None = None  # the vision projector (mmproj) GGUF, if the model has one
    draft_path: Path | None = None  # a smaller model of the same vocabulary that drafts tokens

    @property
    def digest(self) -> str:
        """The model weights' blob digest: what identifies a loaded model to the scheduler."""
        layer = self.manifest.layer(MODEL_MEDIA)
        assert layer is not None
        return layer.digest


def name_field(text: Any, field: str = "model") -> ModelName:
    """A request field that must hold a model name; InvalidName in Ollama's words: a missing
    model (or delete's name) is 'model is required'; a wrong copy source or destination, or a
    wrong name to delete, is '<field> "<text>" is invalid'; else 'invalid model name'."""
    given = text if isinstance(text, str) else ""
    if not given and field in ("model", "name"):
        raise InvalidName("model is required")
    try:
        return parse_name(given)
    except InvalidName:
        if field == "model":
            raise
        raise InvalidName(f'{field} "{given}" is invalid') from None


def resolve(store: Store, text: Any) -> ModelSpec:
    """ModelSpec for a model name; InvalidName for a bad name, NotFound for an unknown one."""
    name = name_field(text)
    manifest = store.read_manifest(name)
    if manifest is None:
        raise model_not_found(str(text))
    model_layer = manifest.layer(MODEL_MEDIA)
    projector = manifest.layer(PROJECTOR_MEDIA)
    draft = manifest.layer(DRAFT_MEDIA)
    if model_layer is None or not all(store.has_blob(layer.digest)
                                      for layer in (model_layer, projector, draft) if layer):
        raise model_not_found(str(text))

    def text_of(media: str) -> str:
        layer = manifest.layer(media)
        return store.read_blob(layer.digest).decode() if layer else ""

    def json_of(media: str, default: Any) -> Any:
        layer = manifest.layer(media)
        return orjson.loads(store.read_blob(layer.digest)) if layer else default

    return ModelSpec(
        name=name,
        manifest=manifest,
        model_path=store.blob_path(model_layer.digest),
        template=text_of(TEMPLATE_MEDIA),
        system=text_of(SYSTEM_MEDIA),
        params=json_of(PARAMS_MEDIA, {}),
        messages=json_of(MESSAGES_MEDIA, []),
        licenses=[store.read_blob(lay.digest).decode() for lay in manifest.layers
                  if lay.media_type == LICENSE_MEDIA],
        config=read_config(store, manifest),
        adapter_paths=[store.blob_path(lay.digest) for lay in manifest.layers
                       if lay.media_type == ADAPTER_MEDIA],
        projector_path=store.blob_path(projector.digest) if projector else None,
        draft_path=store.blob_path(draft.digest) if draft else None,
    )


def capabilities(template: str, metadata: dict[str, Any], projector: bool = False) -> list[str]:
    """What a model can do, as /api/show lists it, in Ollama's order (its Capabilities): from
    its GGUF metadata, whether it has a projector, and the variables and thinking tags of its
    template."""
    arch = str(metadata.get("general.architecture", ""))
    info = analyze(template)
    caps = ["embedding" if f"{arch}.pooling_type" in metadata else "completion"]
    if projector or f"{arch}.vision.block_count" in metadata:
        caps.append("vision")
    caps += [name for name, has in (("tools", info.tools), ("insert", info.insert),
                                    ("thinking", info.thinking)) if has]
    return caps


def details(config: dict[str, Any]) -> dict[str, Any]:
    """The `details` object of /api/tags, /api/show and /api/ps, from the config blob."""
    family = config.get("model_family", "")
    return {
        "parent_model": config.get("parent_model", ""),
        "format": config.get("model_format", "gguf"),
        "family": family,
        "families": config.get("model_families") or ([family] if family else None),
        "parameter_size": config.get("model_type", ""),
        "quantization_level": config.get("file_type", ""),
    }


def listed(store: Store, manifest: Manifest, config: dict[str, Any]) -> tuple[dict[str, Any],
                                                                              list[str]]:
    """A stored model's /api/tags `details` and `capabilities`, as Ollama's model list gives
    them (server/model_list_cache.go): the context and embedding lengths from the config, else
    the weights' GGUF header; capabilities from the header, the template and a projector. Weights
    whose header cannot be read give neither the lengths nor the capabilities."""
    info = details(config)
    layer = manifest.layer(MODEL_MEDIA)
    try:
        gguf = cached_info(str(store.blob_path(layer.digest))) if layer else None
    except (OSError, NotGGUF):
        gguf = None
    lengths = {"context_length": config.get("context_length") or (gguf and gguf.context_length),
               "embedding_length": config.get("embedding_length")
               or (gguf and gguf.embedding_length)}
    info.update({key: value for key, value in lengths.items() if value})
    if gguf is None:
        return info, []
    template = manifest.layer(TEMPLATE_MEDIA)
    text = store.read_blob(template.digest).decode() if template else ""
    return info, capabilities(text, gguf.metadata, manifest.layer(PROJECTOR_MEDIA) is not None)


def read_config(store: Store, manifest: Manifest) -> dict[str, Any]:
    if manifest.config.media_type != CONFIG_MEDIA_TYPE or not store.has_blob(manifest.config.digest):
        return {}
    return orjson.loads(store.read_blob(manifest.config.digest))

"""Creating a model: from a GGUF blob (`files`) or from another model (`from`), plus Modelfile
layers (template, system, parameters, license, messages). Beside the weights a model may carry a
projector (mmproj) GGUF, its own layer: `files` naming two GGUFs, or a Modelfile with two FROM
paths, take the one Ollama's rule calls a projector (store/projector.py) as that layer. A draft
model (`draft_files`, or a Modelfile's DRAFT path) is a layer of its own too, after the adapters:
a smaller GGUF of the same vocabulary, whose tokens the worker verifies (workers/draft_model.py).

Everything is validated before the first status is produced, so a bad request fails whole and
writes nothing; then layers are stored, the config blob is written and the manifest replaces the
old one atomically. Layers come in the order Ollama's createModel appends them (the weights and
adapters, then template, system, licenses, parameters, messages), and every blob holds the bytes
Ollama writes for the same input (store/gojson.py), so equal models get equal digests.
`create_model` yields the status lines Ollama clients show as each step happens, with the file
work off the event loop; it is the one code path for /api/create and for registering the
embedded default model.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Callable

from store import quantize
from store.convert import convert
from store.errors import InvalidInput, NotFound
from store.gguf import GGUFInfo, human_number, validate_gguf
from store.gojson import config_blob, messages_blob, params_blob
from store.model import ModelSpec, name_field, resolve
from store.names import ModelName
from store.projector import check_projector, is_projector
from store.store import (ADAPTER_MEDIA, CONFIG_MEDIA_TYPE, CONVERT_PREFIX, DRAFT_MEDIA,
                         LICENSE_MEDIA, MESSAGES_MEDIA, MODEL_MEDIA, PARAMS_MEDIA,
                         PROJECTOR_MEDIA, SYSTEM_MEDIA, TEMPLATE_MEDIA, Layer, Store,
                         normalize_digest)
from store.templates import NamedTemplate, detect

_BLOB_NAME = re.compile(r"sha256-[0-9a-f]{64}")
# What a model created from another takes from its config besides what its weights say, and in
# what type (Ollama's CreateHandler reads these from the base model's ConfigV2).
_INHERITED = {"renderer": str, "parser": str, "requires": str, "model_format": str,
              "capabilities": list, "draft": dict}
# llama.cpp's SPEC_VOCAB_MAX_SIZE_DIFFERENCE: a draft's vocabulary may be this much larger or
# smaller than the model's (padding), no more.
DRAFT_VOCAB_SLACK = 128


@dataclass
class CreateSpec:
    """What a new model is made of; fields as /api/create names them, already type-checked."""

    model: str
    from_: str = ""
    # A Modelfile's FROM paths when it has several (the weights and a projector), unresolved.
    from_paths: list[str] = field(default_factory=list)
    files: dict[str, str] = field(default_factory=dict)
    template: str | None = None
    system: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    licenses: list[str] = field(default_factory=list)
    messages: list[dict[str, Any]] | None = None
    # Folders FROM may import a GGUF from (CORRAL_ALLOWED_IMPORT_DIRS); the store's own blobs
    # are always allowed, so the Modelfile /api/show prints creates the same model again.
    import_dirs: tuple[Path, ...] = ()
    quantize: str = ""  # a type such as q4_K_M, for an F16/F32 source
    adapters: dict[str, str] = field(default_factory=dict)  # LoRA GGUF blobs: file name -> digest
    adapter_paths: list[str] = field(default_factory=list)  # Modelfile ADAPTER paths, as FROM
    requires: str = ""  # the Ollama version the model needs (Modelfile REQUIRES), kept in config
    draft_files: dict[str, str] = field(default_factory=dict)  # a draft GGUF: file name -> digest
    draft_paths: list[str] = field(default_factory=list)  # a Modelfile's DRAFT path, as FROM


@dataclass
class _GGUFFile:
    """A GGUF a create reads: an uploaded blob or a server-side file."""

    name: str  # the file name the request gives it, or the FROM text
    path: Path
    digest: str | None  # None: a server-side file, copied in once every check passed
    media_type: str = MODEL_MEDIA  # or PROJECTOR_MEDIA, ADAPTER_MEDIA, DRAFT_MEDIA


@dataclass
class _Base:
    """The validated starting point: layers kept from the source, its config and parameters."""

    first_status: str
    layers: list[Layer]
    config: dict[str, Any]
    params: dict[str, Any]
    quantize: tuple[str, str] | None = None  # (source type, target type)
    detected: NamedTemplate | None = None  # our template for a bare GGUF's chat template
    copied: bool = False  # the weights were copied in from a path by this create
    files: list[_GGUFFile] = field(default_factory=list)  # their layers lead, in this order


Status = str | dict[str, Any]  # a status line, or {"status", "total", "completed"} progress


# Pulls a model into the store, yielding the pull's statuses (store/registry.py pull).
Pull = Callable[[ModelName], AsyncIterator[Status]]


async def create_model(store: Store, spec: CreateSpec,
                       pull: Pull | None = None) -> AsyncIterator[Status]:
    """Creates or replaces the model, yielding each status; raises StoreError before the first
    status if the request is bad. With `pull`, a base model (`from`) not in the store is pulled
    first, its statuses passed on, as Ollama's create does."""
    name = name_field(spec.model)
    if pull is not None and (base_name := await asyncio.to_thread(_missing_base, store, spec)):
        async for status in pull(base_name):
            yield status
    base = await asyncio.to_thread(_base, store, spec)
    with store.pinned(lay.digest for lay in base.layers):
        async for status in _build(store, spec, name, base):
            yield status
    if base.copied and base.quantize:  # the unquantized copy served its purpose
        weights = next(lay for lay in base.layers if lay.media_type == MODEL_MEDIA)
        await asyncio.to_thread(store.remove_if_unused, weights.digest)


async def _build(store: Store, spec: CreateSpec, name: ModelName,
                 base: _Base) -> AsyncIterator[Status]:
    """The layers written and the manifest last, while the base's blobs are pinned."""
    layers = list(base.layers)
    model = next(lay for lay in layers if lay.media_type == MODEL_MEDIA)
    yield base.first_status
    if base.quantize:
        source, target = base.quantize
        status = f"quantizing {source} model to {target}"
        yield status
        quantized: list[Layer] = []
        async for progress in quantize.quantize(store, model, spec.quantize, quantized):
            yield {"status": status, **progress}
        layers = [quantized[0] if lay is model else lay for lay in layers]
        base.config = {**base.config, "file_type": target}
        yield f"creating new layer {quantized[0].digest}"
    for layer in layers:
        if not (spec.quantize and layer.media_type == MODEL_MEDIA):  # that one was announced
            yield f"using existing layer {layer.digest}"
    if spec.licenses:
        layers = [lay for lay in layers if lay.media_type != LICENSE_MEDIA]
    if base.detected is not None and spec.template is None:
        layer = await asyncio.to_thread(store.add_blob_bytes, base.detected.template.encode(),
                                        TEMPLATE_MEDIA)
        yield f"using autodetected template {base.detected.name}"
        # Ollama adds it after the files' layers (weights, projector), before the adapters
        layers.insert(len(base.files), layer)
    for data, media_type in _new_contents(spec, {**base.params, **spec.parameters}):
        existed = store.has_blob(f"sha256:{hashlib.sha256(data).hexdigest()}")
        layer = await asyncio.to_thread(store.add_blob_bytes, data, media_type)
        yield f"{'using existing' if existed else 'creating new'} layer {layer.digest}"
        layers.append(layer)
    config_layer = await asyncio.to_thread(store.add_blob_bytes, config_blob(base.config),
                                           CONFIG_MEDIA_TYPE)
    yield "writing manifest"
    await asyncio.to_thread(_write_if_changed, store, name, config_layer, layers)
    yield "success"


def _base(store: Store, spec: CreateSpec) -> _Base:
    """Everything the new model starts from, checked; nothing is written before every check
    passed (copies of server-side files come last)."""
    if spec.files and any(f.endswith(".safetensors") for f in spec.files):
        layer = _converted(store, spec.files)
        base = _from_gguf(validate_gguf(store.blob_path(layer.digest)), [layer])
        base.first_status = "converting model"
    elif spec.files:
        base = _from_files([_GGUFFile(name, _uploaded(store, name, digest),
                                      normalize_digest(digest))
                            for name, digest in spec.files.items()])
    elif spec.from_paths or (spec.from_ and is_path(spec.from_)):
        texts = spec.from_paths or [spec.from_]
        found = [(text, *_import_path(store, text, spec.import_dirs)) for text in texts]
        names = _client_names([text for text, _, _ in found])
        # One file named twice is one file, as in the map of files Ollama's client sends.
        base = _from_files(list({names[text]: _GGUFFile(names[text], path, digest)
                                 for text, path, digest in found}.values()))
    elif spec.from_:
        base = _from_model(_resolve_from(store, spec.from_), spec)
    else:
        raise InvalidInput("neither 'from' or 'files' was specified")
    if spec.requires:
        base.config["requires"] = spec.requires
    if spec.quantize:
        base.quantize = quantize.check(str(base.config.get("file_type", "")), spec.quantize)
    if spec.adapters or spec.adapter_paths:  # the request's adapters replace the base model's
        adapters = _adapter_layers(store, spec, str(base.config.get("model_family", "")))
        base.layers = [lay for lay in base.layers if lay.media_type != ADAPTER_MEDIA] + adapters
    if spec.draft_files or spec.draft_paths:  # and its draft the base model's
        draft, architecture = _draft_layer(store, spec, _weights_path(store, base))
        base.layers = [lay for lay in base.layers if lay.media_type != DRAFT_MEDIA] + [draft]
        base.config["draft"] = {"model_format": "gguf", "architecture": architecture}
    if base.files:  # server-side files are copied in only now
        base.copied = any(f.digest is None for f in base.files if f.media_type == MODEL_MEDIA)
        base.layers = [_file_layer(store, f) for f in base.files] + base.layers
    return base


def _from_model(source: ModelSpec, spec: CreateSpec) -> _Base:
    """A model made from another: its layers but those the request replaces, and a config made
    as Ollama makes it, from the weights plus the fields a model inherits."""
    layers = [lay for lay in source.manifest.layers if _kept(lay.media_type, spec)]
    if not any(lay.media_type == MODEL_MEDIA for lay in layers):
        raise InvalidInput("no model weights in the base model")
    inherited = {key: value for key, kind in _INHERITED.items()
                 if isinstance(value := source.config.get(key), kind) and value}
    config = {**_config(validate_gguf(source.model_path)), **inherited,
              "parent_model": source.name.display}
    return _Base("reading model metadata", layers, config, source.params)


def _from_gguf(info: GGUFInfo, layers: list[Layer]) -> _Base:
    """A model made from a GGUF file, with the template (and its parameters) that its Jinja chat
    template maps to, as Ollama picks one; an unmatched Jinja template is rendered as it is."""
    detected = detect(str(info.metadata.get("tokenizer.chat_template") or ""))
    return _Base("parsing GGUF", layers, _config(info),
                 detected.parameters if detected else {}, detected=detected)


def _adapter_layers(store: Store, spec: CreateSpec, family: str) -> list[Layer]:
    """LoRA adapters from uploaded blobs and allowed paths, each checked to be a GGUF adapter
    for this model's architecture before any path is copied into the store."""
    found = _named_files(store, spec.adapters, spec.adapter_paths, spec.import_dirs,
                         ADAPTER_MEDIA)
    for file in found:
        _check_magic(file.path, file.name)
        info = validate_gguf(file.path)
        if info.metadata.get("general.type") != "adapter":
            raise InvalidInput(f"{file.name} is not a LoRA adapter (general.type is not adapter)")
        if family and info.architecture != family:
            raise InvalidInput(f"adapter {file.name} is for {info.architecture}, "
                               f"the model is {family}")
    return [_file_layer(store, file) for file in found]


def _named_files(store: Store, uploaded: dict[str, str], paths: list[str],
                 import_dirs: tuple[Path, ...], media_type: str) -> list[_GGUFFile]:
    """The files a request names: uploaded blobs (file name -> digest), then server-side paths
    (copied into the store only by `_file_layer`, once every check passed)."""
    found = [_GGUFFile(name, _uploaded(store, name, digest), normalize_digest(digest), media_type)
             for name, digest in uploaded.items()]
    return found + [_GGUFFile(text, *_import_path(store, text, import_dirs), media_type)
                    for text in paths]


def _weights_path(store: Store, base: _Base) -> Path:
    if base.files:
        return next(f.path for f in base.files if f.media_type == MODEL_MEDIA)
    return store.blob_path(next(lay for lay in base.layers if lay.media_type == MODEL_MEDIA).digest)


def _draft_layer(store: Store, spec: CreateSpec, weights: Path) -> tuple[Layer, str]:
    """The draft model's layer and its architecture: one GGUF model (not an adapter or a
    projector) whose vocabulary is the weights' as llama.cpp's speculative decoding requires
    (same tokenizer, BOS and EOS; sizes within DRAFT_VOCAB_SLACK). A path is copied into the
    store only after every check passed."""
    found = _named_files(store, spec.draft_files, spec.draft_paths, spec.import_dirs, DRAFT_MEDIA)
    if len(found) != 1:
        raise InvalidInput(f"a draft model is one GGUF file, not {len(found)}")
    [draft] = found
    name = draft.name
    _check_magic(draft.path, name)
    info = validate_gguf(draft.path)
    if info.metadata.get("general.type") == "adapter" or is_projector(info):
        raise InvalidInput(f"draft {name} is not a model (it is an adapter or a projector)")
    model = validate_gguf(weights)
    keys = ("tokenizer.ggml.model", "tokenizer.ggml.add_bos_token", "tokenizer.ggml.bos_token_id",
            "tokenizer.ggml.eos_token_id")
    differs = [key for key in keys if info.metadata.get(key) != model.metadata.get(key)]
    if differs or abs(info.n_vocab - model.n_vocab) > DRAFT_VOCAB_SLACK:
        raise InvalidInput(f"draft {name} does not share the model's vocabulary "
                           f"({', '.join(differs) or 'its size'} differs)")
    return _file_layer(store, draft), info.architecture


def _new_contents(spec: CreateSpec, params: dict[str, Any]) -> list[tuple[bytes, str]]:
    """The layers this request writes, as (bytes, media type), in the order Ollama's createModel
    appends them; `params`: the base model's or detected template's parameters with the
    request's over them, written anew whenever there are any (Ollama's setParameters)."""
    contents: list[tuple[bytes, str]] = []
    if spec.template is not None:
        contents.append((spec.template.encode(), TEMPLATE_MEDIA))
    if spec.system is not None:
        contents.append((spec.system.encode(), SYSTEM_MEDIA))
    contents += [(text.encode(), LICENSE_MEDIA) for text in spec.licenses]
    if params:
        contents.append((params_blob(params), PARAMS_MEDIA))
    if spec.messages is not None:
        contents.append((messages_blob(spec.messages), MESSAGES_MEDIA))
    return contents


def _kept(media_type: str, spec: CreateSpec) -> bool:
    """Whether a base model's layer survives: not its parameters (merged into the new params
    layer), nor a template, system or messages the request replaces."""
    replaced = {TEMPLATE_MEDIA: spec.template is not None, SYSTEM_MEDIA: spec.system is not None,
                PARAMS_MEDIA: True, MESSAGES_MEDIA: spec.messages is not None}
    return not replaced.get(media_type, False)


def _missing_base(store: Store, spec: CreateSpec) -> ModelName | None:
    """The base model `from` names, where it names a model the store does not hold."""
    if spec.files or spec.from_paths or not spec.from_ or is_path(spec.from_):
        return None
    base = name_field(spec.from_)
    return None if store.read_manifest(base) is not None else base


def _resolve_from(store: Store, text: str) -> ModelSpec:
    try:
        return resolve(store, text)
    except NotFound:
        raise NotFound(f'base model "{text}" not found') from None


def _from_files(files: list[_GGUFFile]) -> _Base:
    """A model made from GGUF files, taken in order of their names as Ollama's create takes
    them: each checked, the one Ollama's rule calls a projector (with metadata llama.cpp can
    read) as the projector; exactly one must be the weights."""
    files = sorted(files, key=lambda f: f.name)
    weights: list[GGUFInfo] = []  # each file's header that is not a projector's
    projectors = []
    for file in files:
        _check_magic(file.path, file.name)
        info = validate_gguf(file.path)
        if is_projector(info):
            check_projector(info, file.name)
            file.media_type = PROJECTOR_MEDIA
            projectors.append(file)
        else:
            weights.append(info)
    if len(projectors) > 1:
        raise InvalidInput(f"only one projector is supported, not {len(projectors)} "
                           f"({', '.join(f.name for f in projectors)})")
    if len(weights) != 1:
        raise InvalidInput("exactly one GGUF model file is required besides a projector, "
                           f"not {len(weights)}")
    base = _from_gguf(weights[0], [])
    base.files = files
    return base


def _client_names(texts: list[str]) -> dict[str, str]:
    """The names Ollama's client gives FROM files in the `files` it sends: each file's path
    from the folder all of them are in (just the file name for one file)."""
    paths = {text: os.path.abspath(os.path.expanduser(text)) for text in texts}
    if len(set(paths.values())) < 2:
        return {text: os.path.basename(path) for text, path in paths.items()}
    root = os.path.commonpath([os.path.dirname(path) for path in paths.values()])
    return {text: os.path.relpath(path, root) for text, path in paths.items()}


def _file_layer(store: Store, file: _GGUFFile) -> Layer:
    digest = file.digest or store.add_blob_file(file.path)
    return Layer(file.media_type, digest, store.blob_path(digest).stat().st_size)


def _converted(store: Store, files: dict[str, str]) -> Layer:
    """The GGUF of an uploaded safetensors model directory (`files`: its paths, config.json,
    *.safetensors, tokenizer files and sentence-transformers' pooling config, mapped to blob
    digests), converted as Ollama's create converts one, and kept as a blob."""
    with tempfile.TemporaryDirectory(dir=store.blobs_dir, prefix=CONVERT_PREFIX) as tmp:
        folder = Path(tmp)
        (folder / "model").mkdir()
        for filename, digest in files.items():
            source = _uploaded(store, filename, digest)
            target = (folder / "model" / filename).resolve()
            if not target.is_relative_to(folder / "model") or target == folder / "model":
                raise InvalidInput(f"invalid file name {filename!r}")
            target.parent.mkdir(parents=True, exist_ok=True)
            target.symlink_to(source)
        convert(folder / "model", folder / "model.gguf")
        digest = store.add_blob_file(folder / "model.gguf")
    return _model_layer(store, digest, "model.gguf")


def _uploaded(store: Store, filename: str, digest: str) -> Path:
    digest = normalize_digest(digest)
    if not store.has_blob(digest):
        raise InvalidInput(f"blob {digest} for {filename} not found; "
                           f"upload it with POST /api/blobs/{digest}")
    return store.blob_path(digest)


def is_path(text: str) -> bool:
    """Whether a FROM names a file (else a model)."""
    return text.startswith(("/", "./", "../", "~"))


def _import_path(store: Store, text: str, import_dirs: tuple[Path, ...]) -> tuple[Path, str | None]:
    """A GGUF named by a server-side path: (the file, its digest if it is a blob of this store).
    Only the store's blobs and files inside a folder the operator allowed qualify, checked
    before the file is opened, so a request can never make the server read an arbitrary file."""
    try:
        real = Path(text).expanduser().resolve()
    except (RuntimeError, ValueError, OSError):  # an unknown ~user, a NUL byte, a loop
        raise InvalidInput(f"FROM {text}: not a usable path") from None
    if real.parent == store.blobs_dir.resolve() and _BLOB_NAME.fullmatch(real.name):
        digest = real.name.replace("-", ":", 1)
        if not store.has_blob(digest):
            raise NotFound(f"blob {digest} not found")
        return real, digest
    if not any(real.is_relative_to(folder.expanduser().resolve()) for folder in import_dirs):
        raise InvalidInput(f"FROM {text}: the server imports files only from the folders in "
                           "CORRAL_ALLOWED_IMPORT_DIRS; upload it with POST /api/blobs instead")
    if not real.is_file():
        raise InvalidInput(f"FROM {text}: no such file")
    _check_magic(real, text)
    return real, None


def _model_layer(store: Store, digest: str, filename: str) -> Layer:
    path = store.blob_path(digest)
    _check_magic(path, filename)
    return Layer(MODEL_MEDIA, digest, path.stat().st_size)


def _check_magic(path: Path, filename: str) -> None:
    with open(path, "rb") as f:
        if f.read(4) != b"GGUF":
            raise InvalidInput(f"unsupported file {filename}: only GGUF models can be imported")


def _config(info: GGUFInfo) -> dict[str, Any]:
    """The config blob of a model made from a GGUF file."""
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
    store.prune(store.write_manifest(name, config, layers))  # as Ollama's RemoveLayers

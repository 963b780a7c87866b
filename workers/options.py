"""Every Ollama option, declared once: name, type, default, range and what it governs.

Request validation (`options` of generate/chat/embed), Modelfile `PARAMETER` values and
/api/create `parameters`, /api/show's `parameters`, and the per-request options the worker
receives (`RequestOptions`) all derive from `OPTIONS`, as Ollama's `api/types.go` Options does.
Adding an option is one line here.

Merge order (later wins): defaults < the model's Modelfile parameters < the request's `options`.
Every number is range-checked here, because it reaches C code as a fixed-width integer: an
out-of-range value must be a 400 naming the option, never an overflow in the worker.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, TypedDict

# What an option governs: the loaded context (changing it reloads the model), the prompt,
# the sampler chain, when generation stops, or speculative decoding's drafts.
LOAD, PROMPT, SAMPLING, STOPPING = "load", "prompt", "sampling", "stopping"
SPECULATION = "speculation"

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
GGML_MAX_N_THREADS = 512
MAX_STOP_STRINGS = 64
# Stop strings clients send are a few characters ("<|im_end|>", "\nUser:"); a long one only
# costs: the worker holds back up to its length of output while it might still match.
MAX_STOP_CHARS = 512


@dataclass(frozen=True)
class Option:
    name: str
    kind: type  # int, float, bool or list (of strings)
    default: Any  # None: not sent to the worker (load options, or decided at load)
    group: str
    low: float = -math.inf
    high: float = math.inf


OPTIONS: tuple[Option, ...] = (
    # Ollama's Runner options: changing one loads the model anew.
    Option("num_ctx", int, None, LOAD, 1, INT32_MAX),
    Option("num_batch", int, 512, LOAD, 1, INT32_MAX),  # tokens per llama_decode at most
    Option("num_gpu", int, -1, LOAD, -1, INT32_MAX),  # layers on the GPU; -1: as many as fit
    Option("main_gpu", int, 0, LOAD, 0, INT32_MAX),  # the GPU for a split's small tensors
    # 0: the worker's (physical cores); llama.cpp aborts beyond ggml's GGML_MAX_N_THREADS
    Option("num_thread", int, 0, LOAD, 0, GGML_MAX_N_THREADS),
    Option("use_mmap", bool, None, LOAD),  # None: llama.cpp's choice (mapped)
    Option("num_keep", int, 4, PROMPT, -1, INT32_MAX),
    Option("seed", int, -1, SAMPLING, INT64_MIN, INT64_MAX),
    Option("temperature", float, 0.8, SAMPLING),
    Option("top_k", int, 40, SAMPLING, INT32_MIN, INT32_MAX),
    Option("top_p", float, 0.9, SAMPLING),
    Option("min_p", float, 0.0, SAMPLING),
    Option("typical_p", float, 1.0, SAMPLING),
    Option("repeat_penalty", float, 1.0, SAMPLING),  # Ollama 0.32.10 on: off by default
    Option("repeat_last_n", int, 64, SAMPLING, -1, INT32_MAX),
    Option("presence_penalty", float, 0.0, SAMPLING),
    Option("frequency_penalty", float, 0.0, SAMPLING),
    # 0 and every negative are open-ended, as Ollama takes them (llm/llama_server.go).
    Option("num_predict", int, -1, STOPPING, INT32_MIN, INT32_MAX),
    # A Runner option in Ollama; here per request, as drafts are planned per sequence and step.
    Option("draft_num_predict", int, 4, SPECULATION, 0, INT32_MAX),  # a draft model's guesses
    Option("stop", list, [], STOPPING),
)
BY_NAME: dict[str, Option] = {opt.name: opt for opt in OPTIONS}
# Options older Ollama versions had, which today's Ollama accepts without effect (it logs and
# drops what it no longer knows): accepted and ignored, not refused, so old clients and
# Modelfiles keep working. Each with why it has no effect.
IGNORED: dict[str, str] = {
    "mirostat": "Ollama's engine dropped Mirostat sampling",
    "mirostat_tau": "Ollama's engine dropped Mirostat sampling",
    "mirostat_eta": "Ollama's engine dropped Mirostat sampling",
    "tfs_z": "llama.cpp removed tail-free sampling",
    "penalize_newline": "llama.cpp removed it; newlines are penalized like any token",
    "f16_kv": "the KV cache type is OLLAMA_KV_CACHE_TYPE's, server-wide",
    "logits_all": "logits are computed where a token is sampled",
    "num_gqa": "read from the model file",
    "rope_frequency_base": "read from the model file",
    "rope_frequency_scale": "read from the model file",
    "use_mlock": "Ollama removed it from its runner options",
    "numa": "Ollama removed it from its runner options",
    "low_vram": "Ollama removed it from its runner options",
    "vocab_only": "Ollama removed it from its runner options",
    "embedding_only": "whether a model embeds is read from the model file",
}

# The worker's wire type: every option that is not a load option (those shape the loaded
# context and travel in Load), fully filled in by `merge`.
RequestOptions = TypedDict(  # type: ignore[misc]
    "RequestOptions", {opt.name: opt.kind for opt in OPTIONS if opt.group != LOAD})
DEFAULTS: dict[str, Any] = {opt.name: opt.default for opt in OPTIONS if opt.group != LOAD}


class LoadOptions(TypedDict):
    """The load options of a request, merged: what the loaded model is (a runner serves only
    requests whose load options equal its own; other values load the model anew)."""

    num_ctx: int
    num_batch: int
    num_gpu: int
    main_gpu: int
    num_thread: int
    use_mmap: bool | None


class InvalidOption(ValueError):
    pass


def validate(options: Any, what: str = "option") -> dict[str, Any]:
    """Checked, normalised copy of an options/parameters mapping; `what` names it in errors."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise InvalidOption(f"{what}s must be an object")
    clean: dict[str, Any] = {}
    for key, value in options.items():
        if value is None or key in IGNORED:
            continue
        opt = BY_NAME.get(key)
        if opt is None:
            raise InvalidOption(f'invalid {what} "{key}"')
        clean[key] = convert(opt, value, what)
    return clean


def convert(opt: Option, value: Any, what: str = "option") -> Any:
    """One value checked against its declaration (JSON types; Modelfile text is parsed first)."""
    label = f'{what} "{opt.name}"'
    if opt.kind is bool:
        if not isinstance(value, bool):
            raise InvalidOption(f"{label} must be of type boolean")
        return value
    if opt.kind is list:
        if isinstance(value, str):
            value = [value]
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise InvalidOption(f"{label} must be a list of strings")
        if len(value) > MAX_STOP_STRINGS:
            raise InvalidOption(f"{label} takes at most {MAX_STOP_STRINGS} strings")
        if any(len(v) > MAX_STOP_CHARS for v in value):
            raise InvalidOption(f"{label} strings must be at most {MAX_STOP_CHARS} characters")
        return list(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidOption(f"{label} must be of type {'integer' if opt.kind is int else 'number'}")
    if not math.isfinite(value):
        raise InvalidOption(f"{label} must be a finite number")
    if opt.kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise InvalidOption(f"{label} must be of type integer")
        value = int(value)
    if not opt.low <= value <= opt.high:
        raise InvalidOption(f"{label} must be between {_bound(opt.low)} and {_bound(opt.high)}")
    if opt.name in POSITIVE and value <= 0:
        raise InvalidOption(f"{label} must be greater than 0")
    return float(value) if opt.kind is float else value


# Values llama.cpp's sampler refuses at 0 and below (common_sampler_init: "penalty_repeat must
# be finite and greater than 0"); a penalty of 0 divided logits by zero.
POSITIVE = frozenset({"repeat_penalty"})


def _bound(x: float) -> str:
    return str(int(x)) if math.isfinite(x) else str(x)


def merge(model_params: Mapping[str, Any], request_options: Mapping[str, Any],
          default_num_ctx: int) -> tuple[RequestOptions, LoadOptions]:
    """(per-request options for the worker, the load options of the model it needs)."""
    # Stored parameters were checked when the model was created, but a store written by Ollama
    # or an older version may hold options we do not know (ignored) or ranges we refuse.
    known = validate({k: v for k, v in model_params.items() if k in BY_NAME}, "parameter")
    merged: dict[str, Any] = {**{o.name: o.default for o in OPTIONS}, **known, **request_options}
    wire = {key: merged[key] for key in DEFAULTS}
    load: LoadOptions = {"num_ctx": int(merged["num_ctx"] or default_num_ctx),
                         "num_batch": merged["num_batch"], "num_gpu": merged["num_gpu"],
                         "main_gpu": merged["main_gpu"], "num_thread": merged["num_thread"],
                         "use_mmap": merged["use_mmap"]}
    return wire, load  # type: ignore[return-value]

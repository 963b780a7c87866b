"""Generation options: validation, Ollama's defaults, and the merge order.

Merge order (later wins): Ollama's defaults < the model's Modelfile parameters < the request's
`options`. Unknown names and wrong types are refused with a message naming the option; the same
check guards `parameters` in /api/create so a bad value never reaches the store.
"""

from __future__ import annotations

from typing import Any, Mapping

from workers.protocol import SamplingOptions

_INT = ("num_keep", "seed", "num_predict", "top_k", "repeat_last_n", "num_ctx", "num_batch",
        "num_gpu", "main_gpu", "num_thread")
_FLOAT = ("temperature", "top_p", "min_p", "typical_p", "repeat_penalty", "presence_penalty",
          "frequency_penalty")
_BOOL = ("numa", "use_mmap", "use_mlock", "low_vram", "vocab_only", "penalize_newline")
_STRINGS = ("stop",)

DEFAULTS: SamplingOptions = {
    "num_predict": -1,
    "num_keep": 4,
    "temperature": 0.8,
    "top_k": 40,
    "top_p": 0.9,
    "min_p": 0.0,
    "repeat_penalty": 1.1,
    "repeat_last_n": 64,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "seed": -1,
    "stop": [],
}


class InvalidOption(ValueError):
    pass


def validate(options: Any) -> dict[str, Any]:
    """Checked, normalised copy of an options/parameters mapping."""
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise InvalidOption("options must be an object")
    clean: dict[str, Any] = {}
    for key, value in options.items():
        if value is None:
            continue
        if key in _INT:
            clean[key] = _as_int(key, value)
        elif key in _FLOAT:
            clean[key] = _as_float(key, value)
        elif key in _BOOL:
            if not isinstance(value, bool):
                raise InvalidOption(f'option "{key}" must be of type boolean')
            clean[key] = value
        elif key in _STRINGS:
            clean[key] = _as_strings(key, value)
        else:
            raise InvalidOption(f'invalid option "{key}"')
    return clean


def merge(model_params: Mapping[str, Any], request_options: Mapping[str, Any],
          default_num_ctx: int) -> tuple[SamplingOptions, int]:
    """(sampling options for the worker, num_ctx for the loaded context)."""
    merged: dict[str, Any] = {**DEFAULTS, **model_params, **request_options}
    num_ctx = int(merged.get("num_ctx") or default_num_ctx)
    if num_ctx < 1:
        raise InvalidOption('option "num_ctx" must be at least 1')
    sampling = {key: merged[key] for key in DEFAULTS}
    return sampling, num_ctx  # type: ignore[return-value]


def _as_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidOption(f'option "{key}" must be of type integer')
    if isinstance(value, float) and not value.is_integer():
        raise InvalidOption(f'option "{key}" must be of type integer')
    return int(value)


def _as_float(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidOption(f'option "{key}" must be of type number')
    return float(value)


def _as_strings(key: str, value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise InvalidOption(f'option "{key}" must be a list of strings')

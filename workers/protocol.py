"""Every message that crosses the front-end/worker process boundary.

Messages are dataclasses sent as orjson bytes with `Connection.send_bytes`: a two-element
array `[tag, fields]`. Nothing is pickled, so a worker can never be handed code, and the wire
format is readable in a debugger. Fields hold plain JSON types only (dicts, not nested records),
so decoding is one constructor call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypedDict, Union

import orjson


class SamplingOptions(TypedDict):
    """Validated, fully defaulted generation options (see server/options.py)."""

    num_predict: int
    num_keep: int
    temperature: float
    top_k: int
    top_p: float
    min_p: float
    repeat_penalty: float
    repeat_last_n: int
    presence_penalty: float
    frequency_penalty: float
    seed: int
    stop: list[str]


class ChatMessage(TypedDict):
    role: str
    content: str


class PromptSpec(TypedDict):
    """What the worker needs to build a prompt next to the tokenizer.

    `raw` set: tokenize it as is (generate with raw=true). Otherwise render `messages` with
    `template` (an Ollama Go template) or, when that is empty, the GGUF's own chat template.
    `context` holds token ids from an earlier /api/generate reply, placed before the prompt.
    """

    raw: str | None
    messages: list[ChatMessage]
    template: str
    context: list[int]


# ---- front end -> worker -------------------------------------------------------------------


@dataclass(slots=True)
class Load:
    model_id: str
    path: str
    num_ctx: int
    slots: int
    n_gpu_layers: int


@dataclass(slots=True)
class Unload:
    model_id: str


@dataclass(slots=True)
class Submit:
    job_id: int
    model_id: str
    prompt: PromptSpec
    options: SamplingOptions
    want_context: bool


@dataclass(slots=True)
class Cancel:
    job_id: int


@dataclass(slots=True)
class Embed:
    job_id: int
    model_id: str
    inputs: list[str]
    truncate: bool


@dataclass(slots=True)
class Shutdown:
    pass


# ---- worker -> front end -------------------------------------------------------------------


@dataclass(slots=True)
class Ready:
    """Sent once the worker has imported llama.cpp and can take work."""

    pid: int
    gpu_offload: bool


@dataclass(slots=True)
class Loaded:
    model_id: str
    load_duration: int  # ns
    size: int  # bytes held for this model (weights + KV cache)
    size_vram: int


@dataclass(slots=True)
class LoadFailed:
    model_id: str
    message: str


@dataclass(slots=True)
class Unloaded:
    model_id: str


@dataclass(slots=True)
class Chunk:
    job_id: int
    text: str
    token_count: int


@dataclass(slots=True)
class Done:
    job_id: int
    done_reason: str  # "stop" | "length"
    prompt_eval_count: int
    prompt_eval_duration: int  # ns
    eval_count: int
    eval_duration: int  # ns
    context: list[int] = field(default_factory=list)


@dataclass(slots=True)
class Embedded:
    job_id: int
    embeddings: list[list[float]]
    prompt_eval_count: int


@dataclass(slots=True)
class Failed:
    job_id: int
    message: str
    # "bad_request" marks a fault in the request (e.g. input too long), not in the worker.
    kind: str = "internal"


ToWorker = Union[Load, Unload, Submit, Cancel, Embed, Shutdown]
FromWorker = Union[Ready, Loaded, LoadFailed, Unloaded, Chunk, Done, Embedded, Failed]

_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (Load, Unload, Submit, Cancel, Embed, Shutdown,
                Ready, Loaded, LoadFailed, Unloaded, Chunk, Done, Embedded, Failed)
}


def encode(message: ToWorker | FromWorker) -> bytes:
    return orjson.dumps([type(message).__name__, message])


def decode(data: bytes) -> Any:
    tag, fields = orjson.loads(data)
    try:
        cls = _TYPES[tag]
    except KeyError:
        raise ValueError(f"unknown message type {tag!r}") from None
    return cls(**fields)

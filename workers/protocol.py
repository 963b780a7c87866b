"""Every message that crosses the front-end/worker process boundary.

Messages are dataclasses encoded with orjson as a two-element array `[tag, fields]`, each in a
frame of a 4-byte big-endian length and the payload, over one pipe per direction. Nothing is
pickled, so a worker can never be handed code. Fields hold plain JSON types only (dicts, not
nested records), so decoding is one constructor call.

Framing is ours rather than `Connection.send_bytes`, because the front end reads with the event
loop: libuv makes a watched fd non-blocking, and a blocking-style reader then fails on a
message that arrives in pieces (seen with a 25 KB embedding reply).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from typing import Any, NotRequired, TypedDict, Union

import orjson

from workers.options import RequestOptions


class ChatMessage(TypedDict):
    role: str
    content: str
    thinking: NotRequired[str]
    tool_calls: NotRequired[list[dict[str, Any]]]  # [{"function": {"name", "arguments"}}]
    tool_name: NotRequired[str]  # on a "tool" message: which tool answered
    tool_call_id: NotRequired[str]  # on a "tool" message: the call it answers
    images: NotRequired[list[str]]  # base64 image files (PNG, JPEG, WebP, GIF), for a projector


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
    tools: NotRequired[list[dict[str, Any]]]  # function definitions for the template's .Tools
    think: NotRequired[bool | str | None]  # the request's `think`, for .Think/.IsThinkSet
    suffix: NotRequired[str]  # fill-in-the-middle: the text after the gap (the template's .Suffix)
    truncate: NotRequired[bool]  # False: a prompt longer than the context fails (default True)


# ---- front end -> worker -------------------------------------------------------------------


# Tokens a draft model's context computes at once: its compute buffer holds logits for this many
# (a draft needs one a decode), which the front end's memory estimate counts.
DRAFT_UBATCH = 64


@dataclass(slots=True)
class Load:
    model_id: str
    path: str
    num_ctx: int
    slots: int
    n_gpu_layers: int
    adapters: list[str] = field(default_factory=list)  # LoRA GGUF paths, applied at scale 1
    kv_cells: int = 0  # KV cache size shared by the slots; 0 = num_ctx x slots
    batch_invariant: bool = False  # output must not depend on what shares the batch
    tensor_split: list[float] = field(default_factory=list)  # a split: each GPU's share, in
    # CUDA_VISIBLE_DEVICES order (empty: llama.cpp's own, by free memory)
    num_batch: int = 512  # tokens one llama_decode takes at most (the `num_batch` option)
    main_gpu: int = 0  # the `main_gpu` option
    n_threads: int = 0  # the `num_thread` option; 0: the worker's own count
    use_mmap: bool | None = None  # the `use_mmap` option; None: llama.cpp's default
    flash_attention: bool | None = None  # OLLAMA_FLASH_ATTENTION; None: llama.cpp's auto
    kv_cache_type: str = "f16"  # OLLAMA_KV_CACHE_TYPE: f16, q8_0 or q4_0
    projector: str = ""  # the vision projector (mmproj) GGUF's path; "": a text-only model
    speculative: str = "auto"  # CORRAL_SPECULATIVE: auto (drafts weighed by cost), always, off
    draft: str = ""  # a draft model GGUF's path (workers/draft_model.py); "": prompt lookup

    @property
    def batch_tokens(self) -> int:
        return batch_tokens(self.num_batch, self.kv_cells or self.num_ctx * self.slots, self.slots)


def batch_tokens(num_batch: int, kv_cells: int, slots: int) -> int:
    """Tokens one llama_decode takes, and computes at once (its n_batch and n_ubatch, as
    Ollama sets both): `num_batch`, but never fewer than one per slot, since every generating
    sequence adds its token to each step, nor more than the cells it could fill (llama.cpp
    bounds its own n_batch so; a num_batch of 2^31 was a 45 GB llama_batch that crashed the
    worker). The compute buffer grows with it (scheduler/memory.py)."""
    return max(min(num_batch, kv_cells), slots)


@dataclass(slots=True)
class Unload:
    model_id: str


# Structured output: None (free text), "json" (any JSON value) or a JSON schema (a dict).
OutputFormat = Union[None, str, dict[str, Any]]


@dataclass(slots=True)
class Submit:
    job_id: int
    model_id: str
    prompt: PromptSpec
    options: RequestOptions
    want_context: bool
    format: OutputFormat = None
    logprobs: int = -1  # -1: none; else each token's log-probability and this many of the top
    shift: bool = True  # False: a sequence that fills its context ends there ("length")
    format_prefix: str = ""  # text the answer must start with, before the `format` (a tool-call tag)


@dataclass(slots=True)
class Cancel:
    job_id: int


@dataclass(slots=True)
class Embed:
    job_id: int
    model_id: str
    inputs: list[str | list[int]]  # texts, or token ids
    truncate: bool


@dataclass(slots=True)
class Ping:
    """Answered with Pong between two steps: proves the step loop is alive."""

    nonce: int


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
class Pong:
    nonce: int


@dataclass(slots=True)
class Loaded:
    model_id: str
    load_duration: int  # ns
    weights_size: int  # bytes
    on_gpu: bool


@dataclass(slots=True)
class LoadFailed:
    model_id: str
    message: str


@dataclass(slots=True)
class Unloaded:
    model_id: str


@dataclass(slots=True)
class Started:
    """A job's prompt is built and its sequence waits for the batch: sent before any text."""

    job_id: int
    prompt_tokens: int
    thinking: bool  # the prompt ended inside a thinking block: the first words are thinking


@dataclass(slots=True)
class Chunk:
    """New text of one job. The front end's job queues carry these; on the wire they travel
    inside Step as [job_id, text, token_count] triples, or with a fourth item: the tokens'
    logprobs (Logprob dicts), when the request asked for them."""

    job_id: int
    text: str
    token_count: int
    logprobs: list[Logprob] | None = None


class TokenLogprob(TypedDict):
    token: str  # the token's text (an incomplete UTF-8 character as U+FFFD)
    logprob: float  # log-softmax of the raw logits over the whole vocabulary
    bytes: list[int]  # the token's own bytes


class Logprob(TokenLogprob):
    top_logprobs: NotRequired[list[TokenLogprob]]  # the most likely, when asked for


@dataclass(slots=True)
class Step:
    """One engine step of one model: every sequence's new text and the step's figures, in one
    message instead of one per sequence per token. Done/Failed of the step follow it."""

    model_id: str
    texts: list[list[Any]]  # [job_id, text, tokens the text holds(, logprobs)] per sequence
    tokens: int  # tokens decoded in the batch
    sequences: int  # sequences that took part
    duration: int  # ns the step took
    kv_used: int  # KV cells in use (running sequences and cached prefixes)
    kv_cells: int  # KV cells in all


@dataclass(slots=True)
class Done:
    job_id: int
    done_reason: str  # "stop" | "length"
    prompt_eval_count: int
    prompt_eval_duration: int  # ns
    eval_count: int
    eval_duration: int  # ns
    context: list[int] = field(default_factory=list)
    prompt_cached: int = 0  # prompt tokens whose KV cells were reused, not computed
    drafted: int = 0  # draft tokens verified for it (workers/speculation.py)
    accepted: int = 0  # of them, those it kept
    stop: str = ""  # the stop string that ended it (done_reason "stop"), if one did


@dataclass(slots=True)
class Embedded:
    job_id: int
    embeddings: list[list[float]]
    prompt_eval_count: int
    memory: int = 0  # bytes the model's embedding context holds (shown in /api/ps)


@dataclass(slots=True)
class Failed:
    job_id: int
    message: str
    # "bad_request" marks a fault in the request (e.g. input too long), not in the worker.
    kind: str = "internal"


# ---- worker -> its render processes (workers/render_process.py) and back --------------------


@dataclass(slots=True)
class Render:
    """One prompt to render: `template` (an Ollama Go template), else the GGUF's
    `chat_template` (Jinja, with the model's BOS/EOS text), else the bare prompt."""

    template: str
    messages: list[ChatMessage]
    chat_template: str = ""
    bos: str = ""
    eos: str = ""
    tools: list[dict[str, Any]] | None = None
    think: bool | str | None = None
    suffix: str = ""
    cpu_seconds: float = 10.0  # CPU time this rendering may take (charged to its request)


@dataclass(slots=True)
class Rendered:
    text: str


@dataclass(slots=True)
class RenderFailed:
    message: str
    kind: str  # "template" (the template's fault), "time" (CPU limit), "memory"


ToWorker = Union[Load, Unload, Submit, Cancel, Embed, Ping, Shutdown]
FromWorker = Union[Ready, Pong, Loaded, LoadFailed, Unloaded, Started, Step, Done, Embedded,
                   Failed]

_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (Load, Unload, Submit, Cancel, Embed, Ping, Shutdown,
                Ready, Pong, Loaded, LoadFailed, Unloaded, Started, Step, Done, Embedded, Failed,
                Render, Rendered, RenderFailed)
}


Message = Union[ToWorker, FromWorker, Render, Rendered, RenderFailed]


def encode(message: Message) -> bytes:
    return orjson.dumps([type(message).__name__, message])


def decode(data: bytes) -> Any:
    tag, fields = orjson.loads(data)
    try:
        cls = _TYPES[tag]
    except KeyError:
        raise ValueError(f"unknown message type {tag!r}") from None
    return cls(**fields)


_LENGTH = struct.Struct("!I")


def frame(message: Message) -> bytes:
    data = encode(message)
    return _LENGTH.pack(len(data)) + data


def write_frame(fd: int, message: Message) -> None:
    """Writes one whole frame to a blocking fd (raises BrokenPipeError if the peer is gone)."""
    view = memoryview(frame(message))
    while view:
        view = view[os.write(fd, view):]


class FrameReader:
    """Reassembles frames from whatever pieces reads return."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        self._buffer += data
        messages = []
        while len(self._buffer) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(self._buffer)
            end = _LENGTH.size + length
            if len(self._buffer) < end:
                break
            messages.append(decode(bytes(self._buffer[_LENGTH.size:end])))
            del self._buffer[:end]
        return messages

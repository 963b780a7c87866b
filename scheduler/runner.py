"""A runner: one model loaded on one worker with its load options, and what it is asked for by.

A model may have several runners on different devices (replicas). Each holds `slots` sequences
at once; `refcount` counts the jobs holding one (Ollama's runnerRef.refCount). A runner serves
only requests whose load options equal its own (Ollama's needsReload); others load the model
anew once it is idle.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from scheduler.memory import ModelMemory
from scheduler.plan import Plan
from scheduler.worker import WorkerHandle
from workers.options import LoadOptions


@dataclass(frozen=True)
class ModelRef:
    """What the scheduler needs to know about a stored model; built by the front end."""

    name: str  # display name, e.g. "gemma3:270m"
    digest: str  # weights blob digest: identifies the model
    manifest_digest: str  # what /api/ps shows as "digest"
    path: str
    memory: ModelMemory
    context_length: int  # trained context length from the GGUF (0 if unknown)
    n_vocab: int  # tokenizer vocabulary size from the GGUF (0 if unknown)
    details: dict
    adapters: tuple[str, ...] = ()  # LoRA adapter files applied on top of the weights
    projector: str = ""  # the vision projector (mmproj) file; "": the model takes no images
    draft: str = ""  # the draft model file; "": drafts come from prompt lookup


@dataclass(eq=False)
class Runner:
    ref: ModelRef
    model_id: str
    options: LoadOptions  # what it was loaded with; num_ctx is per sequence
    slots: int  # sequences at once
    kv_cells: int  # KV cache size, shared by the slots
    worker: WorkerHandle
    ready: asyncio.Future[None]  # done once loaded (or failed)
    keep_alive: float
    plan: Plan
    refcount: int = 0  # jobs holding a slot
    embeds: int = 0  # of them, embeddings (they send no Step messages)
    draining: bool = False  # takes no new jobs: waiting to be replaced or unloaded
    embed_size: int = 0  # the embedding context, once one was used
    last_used: float = field(default_factory=time.monotonic)
    expires_at: float = 0.0  # wall clock, for /api/ps
    expiry: asyncio.TimerHandle | None = None

    @property
    def num_ctx(self) -> int:
        return self.options["num_ctx"]

    @property
    def size(self) -> int:
        return self.plan.estimate.total

    @property
    def size_vram(self) -> int:
        return self.plan.estimate.vram


def needs_reload(loaded: LoadOptions, wanted: LoadOptions) -> bool:
    """Whether a runner loaded with `loaded` cannot serve a request for `wanted`: some load
    option differs. A request that leaves the layers to the fit (num_gpu -1) takes whatever
    the runner has, as Ollama's does."""
    if wanted["num_gpu"] < 0:
        wanted = {**wanted, "num_gpu": loaded["num_gpu"]}
    return loaded != wanted

"""The scheduler's state at one moment, frozen: what /api/ps and /metrics read.

Built by `Scheduler.snapshot()` on the event loop; readers never reach into runners or workers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class RunnerState:
    """One loaded runner (a model's replicas each have their own)."""

    name: str  # the name it was last asked for by
    digest: str  # the manifest's digest
    details: Mapping[str, Any]  # the model's details, as /api/show gives them
    size: int  # bytes it holds in all (the embedding context included, once used)
    size_vram: int  # of them, on GPUs
    context_length: int  # num_ctx of each sequence
    expires_at: float  # wall clock (seconds) when its keep-alive ends
    devices: tuple[str, ...]
    slots: int  # sequences at once
    refcount: int  # requests holding a slot now
    kv_used: int  # KV cells in use at its latest engine step (0 before the first)
    kv_cells: int  # KV cells in all


@dataclass(frozen=True)
class Snapshot:
    runners: tuple[RunnerState, ...]
    waiting: int  # requests waiting for a slot or for their model to load
    worker_restarts: int  # workers that died or hung and were replaced

"""Where a model goes: a pure function of (devices, loaded models, request) -> decision.

A device takes a model when it has the memory and is under the per-device model limit. When no
device does, the cheapest fix is chosen: evict idle models, least recently used first, on the
device where that takes the fewest evictions. If nothing can be evicted the caller waits for a
model to go idle. A device with nothing loaded accepts any model no larger than its total memory
(llama.cpp then decides, e.g. by memory-mapping weights larger than free RAM); a model larger
than every device is refused outright, and nothing is evicted for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from scheduler.devices import Device


@dataclass(frozen=True)
class LoadedModel:
    model_id: str
    device_id: str
    size: int
    idle: bool
    last_used: float


@dataclass(frozen=True)
class Placement:
    device_id: str | None  # None: nothing fits now; wait for a model to become idle
    evict: tuple[str, ...] = ()
    never_fits: bool = False  # larger than every device even when empty: an error, not a wait


AUTO_CONTEXTS = 4  # auto slots: the KV cache holds this many full contexts
AUTO_MIN_SLOTS, AUTO_MAX_SLOTS = 16, 64
AUTO_CELLS_PER_SLOT = 512


def kv_plan(num_ctx: int, parallel: int) -> tuple[int, int]:
    """(slots, KV cells) of a runner. A set OLLAMA_NUM_PARALLEL gives each slot a whole context.
    Auto (0) reserves AUTO_CONTEXTS contexts of cells and shares them among more slots: the
    worker admits a sequence while free cells allow, so short requests run 16+ at once in the
    memory four long ones would take."""
    if parallel:
        return parallel, num_ctx * parallel
    cells = num_ctx * AUTO_CONTEXTS
    return min(AUTO_MAX_SLOTS, max(AUTO_MIN_SLOTS, cells // AUTO_CELLS_PER_SLOT)), cells


def estimate_bytes(file_size: int, kv_bytes_per_token: int, kv_cells: int) -> int:
    """Weights plus the KV cache, plus 10% for compute buffers."""
    return int((file_size + kv_bytes_per_token * kv_cells) * 1.1)


def place(devices: Sequence[Device], loaded: Sequence[LoadedModel], need: int,
          max_loaded_per_device: int) -> Placement:
    if devices and all(need > d.total_memory for d in devices):
        return Placement(None, never_fits=True)  # evicting anything would be for nothing
    best: Placement | None = None
    # Most free memory first: spreads models over GPUs instead of stacking them on one.
    for device in sorted(devices, key=lambda d: d.free_memory, reverse=True):
        here = [m for m in loaded if m.device_id == device.id]
        if not here:
            return Placement(device.id)
        free, count = device.free_memory, len(here)
        evicted: list[str] = []
        for victim in sorted((m for m in here if m.idle), key=lambda m: m.last_used):
            if _fits(free, need, count, max_loaded_per_device):
                break
            evicted.append(victim.model_id)
            free += victim.size
            count -= 1
        if _fits(free, need, count, max_loaded_per_device):
            if best is None or len(evicted) < len(best.evict):
                best = Placement(device.id, tuple(evicted))
    return best or Placement(None)


def _fits(free: int, need: int, count: int, limit: int) -> bool:
    return (free >= need or count == 0) and count < limit

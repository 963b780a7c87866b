"""Where a model goes: pure functions of (devices, loaded models, request) -> decision.

Free memory of a device is what our own books leave (its total, less the GPU overhead and what
our loaded models hold) or what the device reports (less what is still loading and so not yet
visible there), whichever is smaller: the books see loads in flight, the device sees other
processes.

A model goes whole onto one device when one can take it: the one needing the fewest evictions,
most free memory first (so models spread over GPUs instead of stacking on one). Evictions take
idle models, least recently used first, never one with requests in flight; a device that could
take the model once busy models finish means wait. A model that no single device could ever hold
is split over GPUs (`place_split`), or else partly offloaded (decided with `memory.fit_layers`).
A CPU device with nothing loaded accepts any model no larger than its total memory (llama.cpp
memory-maps the weights, so the page cache gives way).

`OLLAMA_MAX_LOADED_MODELS` counts runners on all devices, replicas included.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from scheduler.devices import Device


@dataclass(frozen=True)
class LoadedModel:
    model_id: str
    key: str  # weights identity: the replicas of one model share it
    memory: Mapping[str, int]  # bytes held on each device (several when split)
    idle: bool  # no request in flight and loaded: may be evicted
    last_used: float
    loading: bool = False  # not yet visible in the device's own free-memory figure


@dataclass(frozen=True)
class Need:
    """What one model needs to load whole on one device."""

    gpu: int  # bytes on a GPU with every layer there
    cpu: int  # bytes on a CPU device
    split_overhead: int = 0  # bytes each further GPU of a split adds (its compute buffer)

    def on(self, device: Device) -> int:
        return self.gpu if device.is_gpu else self.cpu


@dataclass(frozen=True)
class Limits:
    max_loaded: int  # runners in all (OLLAMA_MAX_LOADED_MODELS)
    gpu_overhead: int = 0  # bytes kept free on every GPU (OLLAMA_GPU_OVERHEAD)


@dataclass(frozen=True)
class Placement:
    devices: tuple[str, ...] = ()  # none: nothing fits now; wait for a model to become idle
    evict: tuple[str, ...] = ()
    never_fits: bool = False  # no device could ever hold it whole: split, offload or refuse
    shares: tuple[float, ...] = ()  # a split: each device's part of the layers (tensor_split)

    @property
    def device_id(self) -> str | None:
        return self.devices[0] if self.devices else None


AUTO_CONTEXTS = 4  # auto slots: the KV cache holds this many full contexts
AUTO_MIN_SLOTS, AUTO_MAX_SLOTS = 16, 64
AUTO_CELLS_PER_SLOT = 512


def kv_plan(num_ctx: int, parallel: int, batch_invariant: bool = False,
            cell_scale: float = 1.0) -> tuple[int, int]:
    """(slots, KV cells) of a runner. A set OLLAMA_NUM_PARALLEL gives each slot a whole context.
    Auto (0) reserves the memory of AUTO_CONTEXTS contexts of f16 cells (more cells, for a
    quantized cache: `cell_scale` is a cell's size against f16's) and shares them among more
    slots: the worker admits a sequence while free cells allow, so short requests run 16+ at
    once in the memory four long ones would take. Batch-invariant mode runs one sequence at a
    time: even decoded in calls of their own, interleaved sequences changed each other's last
    bits."""
    if batch_invariant:
        return 1, num_ctx
    if parallel:
        return parallel, num_ctx * parallel
    cells = int(num_ctx * AUTO_CONTEXTS / cell_scale)
    return min(AUTO_MAX_SLOTS, max(AUTO_MIN_SLOTS, cells // AUTO_CELLS_PER_SLOT)), cells


# OLLAMA_CONTEXT_LENGTH unset: the default num_ctx by the GPUs' memory in all, as Ollama picks
# it (its thresholds sit a little under 48 and 24 GiB, so that those cards qualify).
AUTO_CONTEXT_LENGTHS = ((47 << 30, 262144), (23 << 30, 32768), (0, 4096))


def auto_context_length(devices: Sequence[Device], gpu_overhead: int) -> int:
    vram = sum(max(0, d.total_memory - gpu_overhead) for d in devices if d.is_gpu)
    return next(n for least, n in AUTO_CONTEXT_LENGTHS if vram >= least)


def auto_max_loaded(devices: Sequence[Device]) -> int:
    """OLLAMA_MAX_LOADED_MODELS unset: three models per device, as Ollama (3 x GPUs, 3 on a CPU)."""
    return 3 * max(1, len(devices))


def free_memory(device: Device, loaded: Sequence[LoadedModel], overhead: int) -> int:
    reserve = overhead if device.is_gpu else 0
    booked = sum(m.memory.get(device.id, 0) for m in loaded)
    in_flight = sum(m.memory.get(device.id, 0) for m in loaded if m.loading)
    return max(0, min(device.total_memory - reserve - booked,
                      device.free_memory - reserve - in_flight))


def place(devices: Sequence[Device], loaded: Sequence[LoadedModel], need: Need, limits: Limits,
          *, exclude: frozenset[str] = frozenset(), evict: bool = True) -> Placement:
    """One device for the whole model. `exclude`: devices not to use (those already holding a
    replica); `evict=False`: use free memory only (a replica is not worth an eviction)."""
    if all(need.on(d) > _reclaimable(d, loaded, limits) for d in devices):
        return Placement(never_fits=True)  # evicting anything would be for nothing
    best: Placement | None = None
    for device in sorted(devices, key=lambda d: free_memory(d, loaded, limits.gpu_overhead),
                         reverse=True):
        if device.id in exclude:
            continue
        evicted = _evictions(device, loaded, need.on(device), limits)
        if evicted is None or (evicted and not evict):
            continue
        if best is None or len(evicted) < len(best.evict):
            best = Placement((device.id,), tuple(evicted))
    return best or Placement()


def place_split(devices: Sequence[Device], loaded: Sequence[LoadedModel], need: Need,
                limits: Limits, spread: bool = False) -> Placement:
    """Several GPUs for a model no one GPU holds (or, with `spread`, for every model): as few
    as will do (with `spread`, all), most free first, each taking layers in proportion to its
    room (`need.gpu` in all, plus a compute buffer on every GPU past the first). Idle models are
    evicted, least recently used first, until it fits."""
    gpus = [d for d in devices if d.is_gpu]
    at_least = len(gpus) if spread else 2
    reclaimable = [(d.id, _reclaimable(d, loaded, limits)) for d in gpus]
    if len(gpus) < 2 or not _split(reclaimable, need, at_least):
        return Placement(never_fits=True)
    rooms = {d.id: free_memory(d, loaded, limits.gpu_overhead) for d in gpus}
    idle = sorted((m for m in loaded if m.idle), key=lambda m: m.last_used)
    evicted: list[str] = []
    while True:
        chosen = _split(list(rooms.items()), need, at_least)
        if chosen and len(loaded) - len(evicted) < limits.max_loaded:
            total = sum(room for _, room in chosen)
            return Placement(tuple(i for i, _ in chosen), tuple(evicted),
                             shares=tuple(round(room / total, 4) for _, room in chosen))
        if not idle:
            return Placement()  # fits once busy models finish
        victim = idle.pop(0)
        evicted.append(victim.model_id)
        for device_id, held in victim.memory.items():
            if device_id in rooms:
                rooms[device_id] += held


def _split(rooms: Sequence[tuple[str, int]], need: Need, at_least: int) -> list[tuple[str, int]]:
    """The fewest GPUs (most room first, `at_least` of them) whose room holds the model; []
    if none."""
    chosen: list[tuple[str, int]] = []
    held = 0
    for device_id, room in sorted(rooms, key=lambda r: r[1], reverse=True):
        usable = room - (need.split_overhead if chosen else 0)
        if usable <= 0:
            break
        chosen.append((device_id, usable))
        held += usable
        if len(chosen) >= at_least and held >= need.gpu:
            return chosen
    return []


def _reclaimable(device: Device, loaded: Sequence[LoadedModel], limits: Limits) -> int:
    """Memory the device would have with none of our models on it: what waiting can reach."""
    if not device.is_gpu:
        return device.total_memory
    ours = sum(m.memory.get(device.id, 0) for m in loaded)
    return free_memory(device, loaded, limits.gpu_overhead) + ours


def _evictions(device: Device, loaded: Sequence[LoadedModel], need: int,
               limits: Limits) -> list[str] | None:
    """The idle models to unload so that `device` takes `need` within the model limit: its own
    least recently used first while memory is short, then the least recently used anywhere while
    too many models are loaded. None: even evicting every idle model would not do."""
    free = free_memory(device, loaded, limits.gpu_overhead)
    left_here = sum(1 for m in loaded if device.id in m.memory)
    count = len(loaded)
    idle = sorted((m for m in loaded if m.idle), key=lambda m: m.last_used)
    evicted: list[str] = []
    while True:
        fits_memory = free >= need or (not device.is_gpu and left_here == 0
                                       and need <= device.total_memory)
        if fits_memory and count < limits.max_loaded:
            return evicted
        pool = [m for m in idle if fits_memory or device.id in m.memory]
        if not pool:
            return None
        victim = pool[0]
        idle.remove(victim)
        evicted.append(victim.model_id)
        count -= 1
        if device.id in victim.memory:
            free += victim.memory[device.id]
            left_here -= 1


@dataclass(frozen=True)
class Replica:
    """What replica routing needs to know of one runner of a model."""

    free_slots: int
    ready: bool  # loaded, its worker up (a replica still loading takes no requests yet)


def pick_replica(replicas: Sequence[Replica]) -> int | None:
    """The ready replica with the most free slots (the first on a tie); None: all busy."""
    return max((i for i, r in enumerate(replicas) if r.ready and r.free_slots > 0),
               key=lambda i: replicas[i].free_slots, default=None)


def want_replica(replicas: Sequence[Replica], waiting: int, max_replicas: int) -> bool:
    """Another replica is worth loading when every ready one is full, requests are waiting, none
    is loading already (one at a time: the first may be enough), and the limit allows."""
    return (waiting > 0 and 0 < len(replicas) < max_replicas
            and all(r.ready and r.free_slots == 0 for r in replicas))

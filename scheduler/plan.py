"""Where a new runner goes and what it holds there: a pure function of plain data.

In order, as far as the devices allow (placement.py decides each step):
1. whole, on one device: every layer on a GPU (or all in RAM on a CPU device);
2. split over GPUs, when no single GPU could ever hold it (or every model, with
   OLLAMA_SCHED_SPREAD), by a worker started for those GPUs;
3. partly offloaded: as many layers as the GPU with the most free memory holds, the rest in RAM;
4. an error naming what the model needs and what is free.
A request that fixes its layers on the GPU (`num_gpu` >= 0, Ollama's option) skips all that: that
many layers on one GPU, the rest in RAM (0: none on the GPU). A replica goes whole, on a device
its model's other runners do not use, and evicts nothing. With a device's worker restarting,
nothing is decided: a model might look too large, or an offload be chosen that is not needed.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

from scheduler import memory, placement
from scheduler.devices import Device
from scheduler.errors import FitsNowhere
from scheduler.memory import Estimate, ModelMemory
from scheduler.placement import Limits, LoadedModel, Need

ALL_LAYERS = 999  # n_gpu_layers past any model's layer count: llama.cpp offloads everything


@dataclass(frozen=True)
class Wanted:
    """The runner to place: its model's sizes and its shape."""

    memory: ModelMemory
    slots: int
    kv_cells: int
    num_gpu: int = -1  # layers on the GPU (Ollama's option); -1: as many as fit
    ubatch: int = memory.UBATCH  # tokens one decode computes: the compute buffer's size
    replica_of: frozenset[str] | None = None  # a replica: the devices its model's runners use


@dataclass(frozen=True)
class Room:
    """What a plan is made against: the devices, what is booked on them, and the rules."""

    devices: Sequence[Device]
    host: Device  # RAM, where layers no GPU holds stay
    loaded: Sequence[LoadedModel]  # the runners booked now (loading ones too)
    limits: Limits
    offloading: frozenset[str]  # devices whose worker runs layers on the GPU
    workers_up: bool = True  # False while a device's worker restarts
    spread: bool = False  # OLLAMA_SCHED_SPREAD: split every model over all GPUs
    flash_attention: bool = True  # off in batch-invariant mode: a bigger compute buffer


@dataclass(frozen=True)
class Plan:
    """Where a new runner goes and what it will hold there."""

    devices: tuple[str, ...]  # one, or the GPUs of a split
    evict: tuple[str, ...]
    estimate: Estimate
    n_gpu_layers: int
    memory: dict[str, int]  # bytes booked on each device
    shares: tuple[float, ...] = ()  # a split: each GPU's part of the layers (tensor_split)

    def with_weights(self, actual: int) -> Plan:
        """The plan with the weights llama.cpp reports having loaded, the bookings scaled alike."""
        estimate = self.estimate.with_weights(actual)
        before, after = ((self.estimate.vram, estimate.vram) if self.n_gpu_layers
                         else (self.estimate.total, estimate.total))
        memory = {d: held * after // max(1, before) for d, held in self.memory.items()}
        return replace(self, estimate=estimate, memory=memory)


def plan(want: Wanted, room: Room) -> Plan | None:
    """Where the runner goes; None: not now (wait, or no replica). Raises FitsNowhere when the
    model fits nowhere."""
    if not room.workers_up:
        return None
    gpus = [d for d in room.devices if d.id in room.offloading]
    if gpus and want.num_gpu >= 0:
        return _offload(want, room, gpus, min(want.num_gpu, want.memory.all_layers))
    gpu = _estimate(want, room, want.memory.all_layers)
    cpu = _estimate(want, room, 0)
    need = Need(gpu.vram, cpu.total, split_overhead=gpu.compute_gpu)
    if want.replica_of is not None:
        decision = placement.place(room.devices, room.loaded, need, room.limits,
                                   exclude=want.replica_of, evict=False)
        return _whole(decision, room, gpu, cpu) if decision.devices else None
    if not (room.spread and len(gpus) > 1):
        decision = placement.place(room.devices, room.loaded, need, room.limits)
        if decision.devices:
            return _whole(decision, room, gpu, cpu)
        if not decision.never_fits:
            return None
    if len(gpus) > 1:
        split = placement.place_split(gpus, room.loaded, need, room.limits, spread=room.spread)
        if split.devices:
            return Plan(split.devices, split.evict, gpu, ALL_LAYERS,
                        _shared(gpu.vram, gpu.compute_gpu, split.devices, split.shares),
                        split.shares)
        if not split.never_fits:
            return None
    if not gpus:
        raise _fits_nowhere(want, room)
    most_free = max(placement.free_memory(d, room.loaded, room.limits.gpu_overhead) for d in gpus)
    layers = memory.fit_layers(want.memory, want.kv_cells, want.slots, most_free,
                               room.flash_attention, want.ubatch)
    return _offload(want, room, gpus, layers)


def _estimate(want: Wanted, room: Room, gpu_layers: int) -> Estimate:
    return memory.estimate(want.memory, want.kv_cells, want.slots, gpu_layers,
                           room.flash_attention, want.ubatch)


def _whole(decision: placement.Placement, room: Room, gpu: Estimate, cpu: Estimate) -> Plan:
    [device] = decision.devices
    est, layers = (gpu, ALL_LAYERS) if device in room.offloading else (cpu, 0)
    return Plan(decision.devices, decision.evict, est, layers,
                {device: est.vram if layers else est.total})


def _offload(want: Wanted, room: Room, gpus: Sequence[Device], layers: int) -> Plan | None:
    """`layers` on one GPU, the rest in RAM."""
    est = _estimate(want, room, layers)
    if est.ram > room.host.free_memory:
        raise _fits_nowhere(want, room)
    replica = want.replica_of is not None
    decision = placement.place(gpus, room.loaded, Need(est.vram, est.total), room.limits,
                               exclude=want.replica_of or frozenset(), evict=not replica)
    if decision.never_fits:
        raise _fits_nowhere(want, room)
    if not decision.devices:
        return None  # the model limit, or busy models: wait for one to go idle
    return Plan(decision.devices, decision.evict, est, layers, {decision.devices[0]: est.vram})


def _shared(vram: int, per_gpu: int, devices: Sequence[str],
            shares: Sequence[float]) -> dict[str, int]:
    """A split's bytes on each GPU: its share of the layers, and a compute buffer on each GPU
    past the first (the first's is in `vram` already)."""
    spread = vram + per_gpu * (len(devices) - 1)
    return {d: round(spread * s) for d, s in zip(devices, shares)}


def _fits_nowhere(want: Wanted, room: Room) -> FitsNowhere:
    """The error naming what the model needs (all of it, in RAM) and what each device has free."""
    free = [f"{d.id} {gib(placement.free_memory(d, room.loaded, room.limits.gpu_overhead))}"
            for d in room.devices]
    if any(d.id in room.offloading for d in room.devices):
        free.append(f"RAM {gib(room.host.free_memory)}")
    return FitsNowhere(f"model requires more memory than is free: "
                       f"{gib(_estimate(want, room, 0).total)} in all (free: {', '.join(free)})")


def gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB"

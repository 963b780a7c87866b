"""Device inventory: the GPUs NVML reports, or the CPU and its RAM when there are none.

The scheduler reads devices only through `Inventory`, so tests hand it a simulated one. GPUs are
the ones `CUDA_VISIBLE_DEVICES` lists, in its order, named `cuda:<position>` as CUDA would number
them in this process; a worker is pointed at its GPU by UUID, which means the same GPU whatever
`CUDA_DEVICE_ORDER` says.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import psutil

log = logging.getLogger("corral.devices")

CPU = "cpu"


@dataclass(frozen=True)
class Device:
    id: str  # "cpu" (a simulated inventory: "cpu:<n>") or "cuda:<position>"
    name: str
    total_memory: int
    free_memory: int
    env: dict[str, str] = field(default_factory=dict)  # set in the worker before llama.cpp loads

    @property
    def is_gpu(self) -> bool:
        return self.id.startswith("cuda:")


class Inventory(Protocol):
    def devices(self) -> list[Device]:
        """The devices a worker runs on: the visible GPUs, else the CPU."""

    def host(self) -> Device:
        """The CPU's RAM: where layers that no GPU holds are kept."""


def host_memory() -> Device:
    mem = psutil.virtual_memory()
    return Device(CPU, CPU, mem.total, mem.available)


class SystemInventory:
    """NVML when a driver answers, else one CPU device sized by available RAM."""

    def devices(self) -> list[Device]:
        return _nvml_devices() or [self.host()]

    def host(self) -> Device:
        return host_memory()


@dataclass
class SimulatedInventory:
    """Fixed devices, for tests: policy over 8 GPUs on a machine that has none, or a real server
    with two CPU workers so that replicas can run on one CPU box."""

    gpus_or_cpus: Sequence[Device]
    host_device: Device = field(default_factory=host_memory)

    def devices(self) -> list[Device]:
        return list(self.gpus_or_cpus)

    def host(self) -> Device:
        return self.host_device


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?", re.IGNORECASE)


def parse_size(text: str) -> int:
    """"24G", "512MiB", "1.5t", "4096" -> bytes (binary units)."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"not a size: {text!r}")
    number, unit = match.groups()
    return int(float(number) * 1024 ** "_kmgt".index(unit.lower() or "_"))


def simulated(spec: str) -> SimulatedInventory:
    """A test inventory from "gpu:24G,gpu:24G,gpu:80G" or "cpu:4G,cpu:4G". Simulated GPUs get no
    CUDA environment: on a machine without one their workers simply run on the CPU."""
    kinds = [item.strip().partition(":") for item in spec.split(",") if item.strip()]
    if not kinds or any(kind not in ("cpu", "gpu") for kind, _, _ in kinds):
        raise ValueError(f"expected kind:size items (kind cpu or gpu), got {spec!r}")
    devices = []
    for position, (kind, _, size) in enumerate(kinds):
        memory = parse_size(size)
        ident = f"cuda:{position}" if kind == "gpu" else f"cpu:{position}"
        devices.append(Device(ident, f"simulated {kind}", memory, memory))
    return SimulatedInventory(devices)


def visible_gpus(spec: str | None, uuids: Sequence[str]) -> list[int]:
    """NVML indices of the GPUs `CUDA_VISIBLE_DEVICES` lets CUDA see, in its order.

    As CUDA reads it: unset means all; each entry is an index or a (prefix of a) `GPU-` UUID;
    the list ends at the first entry that names no GPU, is ambiguous or repeats one. MIG
    instances are not scheduled (one worker per whole GPU), so a `MIG-` entry ends it too."""
    if spec is None:
        return list(range(len(uuids)))
    found: list[int] = []
    for entry in (e.strip() for e in spec.split(",")):
        if entry.isdigit():
            index = int(entry) if int(entry) < len(uuids) else None
        else:
            matches = [i for i, u in enumerate(uuids) if entry.startswith("GPU-")
                       and u.startswith(entry)]
            index = matches[0] if len(matches) == 1 else None
        if index is None or index in found:
            break
        found.append(index)
    return found


def _nvml_devices() -> list[Device]:
    try:
        import pynvml  # noqa: PLC0415 - optional at run time: no driver, no GPUs
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - any NVML failure means "no usable GPU"
        return []
    try:
        handles = [pynvml.nvmlDeviceGetHandleByIndex(i)
                   for i in range(pynvml.nvmlDeviceGetCount())]
        uuids = [_text(pynvml.nvmlDeviceGetUUID(h)) for h in handles]
        found = []
        for position, index in enumerate(visible_gpus(os.environ.get("CUDA_VISIBLE_DEVICES"),
                                                      uuids)):
            info = pynvml.nvmlDeviceGetMemoryInfo(handles[index])
            found.append(Device(
                f"cuda:{position}", _text(pynvml.nvmlDeviceGetName(handles[index])),
                int(info.total), int(info.free), {"CUDA_VISIBLE_DEVICES": uuids[index]}))
        return found
    except Exception as exc:  # noqa: BLE001
        log.warning("NVML enumeration failed, using the CPU: %s", exc)
        return []
    finally:
        pynvml.nvmlShutdown()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

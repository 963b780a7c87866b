"""Device inventory: the GPUs NVML reports, or the CPU and its RAM when there are none.

The scheduler reads devices only through `Inventory`, so tests hand it a simulated one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

import psutil

log = logging.getLogger("corral.devices")


@dataclass(frozen=True)
class Device:
    id: str  # "cpu" or "cuda:<index>"
    name: str
    total_memory: int
    free_memory: int
    env: dict[str, str] = field(default_factory=dict)  # set in the worker before llama.cpp loads

    @property
    def is_gpu(self) -> bool:
        return self.id.startswith("cuda:")


class Inventory(Protocol):
    def devices(self) -> list[Device]: ...


class SystemInventory:
    """NVML when a driver answers, else one CPU device sized by available RAM."""

    def devices(self) -> list[Device]:
        gpus = _nvml_devices()
        if gpus:
            return gpus
        mem = psutil.virtual_memory()
        return [Device("cpu", "cpu", mem.total, mem.available)]


def _nvml_devices() -> list[Device]:
    try:
        import pynvml  # noqa: PLC0415 - optional at run time: no driver, no GPUs
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - any NVML failure means "no usable GPU"
        return []
    try:
        found = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            info = pynvml.nvmlDeviceGetMemoryInfo(handle)
            name = pynvml.nvmlDeviceGetName(handle)
            found.append(Device(
                f"cuda:{index}", name.decode() if isinstance(name, bytes) else str(name),
                int(info.total), int(info.free), {"CUDA_VISIBLE_DEVICES": str(index)}))
        return found
    except Exception as exc:  # noqa: BLE001
        log.warning("NVML enumeration failed, using the CPU: %s", exc)
        return []
    finally:
        pynvml.nvmlShutdown()

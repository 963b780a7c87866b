"""Device inventory: which GPUs CUDA_VISIBLE_DEVICES lets us use, and simulated inventories."""

from __future__ import annotations

import pytest

from scheduler import devices
from scheduler.devices import Device, SystemInventory, parse_size, simulated, visible_gpus

UUIDS = ["GPU-aaaa1111", "GPU-bbbb2222", "GPU-bbbb3333", "GPU-cccc4444"]


@pytest.mark.parametrize("spec,expected", [
    (None, [0, 1, 2, 3]),
    ("", []),
    ("2,0", [2, 0]),
    (" 1 , 3 ", [1, 3]),
    ("0,7,1", [0]),
    ("0,-1,1", [0]),
    ("1,1", [1]),
    ("GPU-cccc4444,0", [3, 0]),
    ("GPU-cccc,GPU-aaaa", [3, 0]),
    ("GPU-bbbb,0", []),
    ("MIG-1234", []),
    ("NoDevFiles", []),
], ids=["unset: all", "empty: none", "order as listed", "spaces", "stops at an index past the end",
        "stops at -1", "stops at a repeat", "full UUIDs", "UUID prefixes", "an ambiguous prefix",
        "MIG instances are not scheduled", "a word"])
def test_visible_gpus_reads_cuda_visible_devices_as_cuda_does(spec: str | None,
                                                              expected: list[int]) -> None:
    assert visible_gpus(spec, UUIDS) == expected


@pytest.mark.parametrize("text,size", [("24G", 24 << 30), ("512MiB", 512 << 20), ("1.5t", 3 << 39),
                                       ("4096", 4096), ("8 GB", 8 << 30)])
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


def test_simulated_inventory_of_mixed_gpus() -> None:
    inventory = simulated("gpu:24G,gpu:24G,gpu:80G")
    assert [(d.id, d.total_memory, d.free_memory, d.is_gpu) for d in inventory.devices()] == [
        ("cuda:0", 24 << 30, 24 << 30, True), ("cuda:1", 24 << 30, 24 << 30, True),
        ("cuda:2", 80 << 30, 80 << 30, True)]


def test_simulated_cpus_are_separate_devices_without_a_gpu() -> None:
    devices = simulated("cpu:4G, cpu:4G").devices()
    assert [d.id for d in devices] == ["cpu:0", "cpu:1"]
    assert not any(d.is_gpu or d.env for d in devices)


@pytest.mark.parametrize("spec", ["", "tpu:8G", "gpu", "gpu:lots"])
def test_a_bad_simulated_spec_is_refused(spec: str) -> None:
    with pytest.raises(ValueError):
        simulated(spec)


def test_without_gpus_the_cpu_and_its_ram_is_the_one_device(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(devices, "_nvml_devices", lambda: [])
    [device] = SystemInventory().devices()
    assert device == Device("cpu", "cpu", device.total_memory, device.free_memory)
    assert 0 < device.free_memory <= device.total_memory


def nvml_gpus() -> int:
    try:
        import pynvml  # noqa: PLC0415
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no driver
        return 0
    count = pynvml.nvmlDeviceGetCount()
    pynvml.nvmlShutdown()
    return count


@pytest.mark.gpu
@pytest.mark.skipif(nvml_gpus() == 0, reason="needs an NVIDIA GPU")
def test_nvml_gpus_are_named_by_position_and_pinned_by_uuid(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    found = SystemInventory().devices()
    assert [d.id for d in found] == [f"cuda:{i}" for i in range(nvml_gpus())]
    assert all(d.env["CUDA_VISIBLE_DEVICES"].startswith("GPU-") for d in found)
    assert all(0 < d.free_memory <= d.total_memory for d in found)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert SystemInventory().devices()[0].id == "cpu"

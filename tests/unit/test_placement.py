"""Placement and eviction against simulated device inventories."""

from __future__ import annotations

import pytest

from scheduler.devices import Device
from scheduler.placement import LoadedModel, Placement, estimate_bytes, kv_plan, place

GB = 1 << 30


def gpu(i: int, free: int, total: int = 80 * GB) -> Device:
    return Device(f"cuda:{i}", "H100", total, free)


def loaded(model_id: str, device: str, size: int, idle: bool = True, last: float = 0) -> LoadedModel:
    return LoadedModel(model_id, device, size, idle, last)


def test_empty_device_takes_the_model() -> None:
    assert place([gpu(0, 80 * GB)], [], 10 * GB, 3) == Placement("cuda:0")


def test_prefers_the_device_with_most_free_memory() -> None:
    devices = [gpu(0, 20 * GB), gpu(1, 60 * GB)]
    models = [loaded("a", "cuda:0", 50 * GB), loaded("b", "cuda:1", 10 * GB)]
    assert place(devices, models, 10 * GB, 3) == Placement("cuda:1")


def test_evicts_least_recently_used_idle_model_when_full() -> None:
    models = [loaded("old", "cuda:0", 30 * GB, last=1), loaded("new", "cuda:0", 30 * GB, last=2)]
    assert place([gpu(0, 20 * GB)], models, 40 * GB, 3) == Placement("cuda:0", ("old",))


def test_busy_models_are_never_evicted() -> None:
    models = [loaded("busy", "cuda:0", 70 * GB, idle=False)]
    assert place([gpu(0, 10 * GB)], models, 40 * GB, 3) == Placement(None)


def test_model_count_limit_forces_an_eviction() -> None:
    models = [loaded("a", "cuda:0", GB, last=5), loaded("b", "cuda:0", GB, last=1)]
    assert place([gpu(0, 70 * GB)], models, GB, 2) == Placement("cuda:0", ("b",))


def test_chooses_the_device_needing_fewest_evictions() -> None:
    devices = [gpu(0, 10 * GB), gpu(1, 5 * GB)]
    models = [loaded("x", "cuda:0", 10 * GB, last=1), loaded("y", "cuda:0", 10 * GB, last=2),
              loaded("z", "cuda:1", 30 * GB, last=3)]
    assert place(devices, models, 30 * GB, 3) == Placement("cuda:1", ("z",))


def test_a_model_larger_than_free_memory_goes_to_an_emptied_device() -> None:
    models = [loaded("small", "cpu", GB)]
    cpu = Device("cpu", "cpu", 16 * GB, 8 * GB)
    assert place([cpu], models, 12 * GB, 3) == Placement("cpu", ("small",))


def test_estimate_counts_weights_and_the_kv_cells() -> None:
    assert estimate_bytes(1000, 10, kv_cells=400) == int((1000 + 4000) * 1.1)


def test_a_set_parallel_gives_each_slot_a_whole_context() -> None:
    assert kv_plan(num_ctx=2048, parallel=3) == (3, 6144)


@pytest.mark.parametrize("num_ctx,slots", [(512, 16), (4096, 32), (8192, 64), (131072, 64)])
def test_auto_parallel_shares_four_contexts_of_cells_among_16_to_64_slots(
        num_ctx: int, slots: int) -> None:
    assert kv_plan(num_ctx, parallel=0) == (slots, 4 * num_ctx)


def test_a_model_larger_than_every_device_evicts_nothing_and_never_fits() -> None:
    devices = [gpu(0, free=10 * GB, total=24 * GB), gpu(1, free=5 * GB, total=24 * GB)]
    decision = place(devices, [loaded("idle", "cuda:0", 14 * GB)], need=1 << 50,
                     max_loaded_per_device=3)
    assert decision == Placement(None, (), never_fits=True)

"""Placement, eviction, splits and replica routing against simulated inventories of 1-8 GPUs."""

from __future__ import annotations

from typing import Sequence

import pytest

from scheduler.devices import Device
from scheduler.memory import kv_cell_scale
from scheduler.placement import (LoadedModel, Limits, Need, Placement, Replica, auto_context_length,
                                 auto_max_loaded,
                                 free_memory, kv_plan, pick_replica, place, place_split,
                                 want_replica)

GB = 1 << 30


def gpus(*sizes: int, free: dict[int, int] | None = None) -> list[Device]:
    """GPUs of these sizes in GB; `free` overrides what a GPU reports free (other programs)."""
    free = free or {}
    return [Device(f"cuda:{i}", "GPU", size * GB, free.get(i, size) * GB)
            for i, size in enumerate(sizes)]


def cpu(total: int, free: int) -> list[Device]:
    return [Device("cpu", "cpu", total * GB, free * GB)]


def model(model_id: str, device: str, size: int, idle: bool = True, last: float = 0,
          loading: bool = False, key: str = "") -> LoadedModel:
    """A loaded model of `size` GB on `device`; when it is loaded, the device's reported free
    memory already shows it, so the `gpus()` figures below subtract it by hand."""
    return LoadedModel(model_id, key or model_id, {device: size * GB}, idle, last, loading)


def need(gb: int) -> Need:
    """`gb` on one device; a split adds 1 GB on each further GPU (its compute buffer)."""
    return Need(gpu=gb * GB, cpu=gb * GB, split_overhead=GB)


def shares(*rooms: int) -> tuple[float, ...]:
    """Layers go in proportion to each GPU's room (less 1 GB past the first GPU)."""
    return tuple(round(room / sum(rooms), 4) for room in rooms)


ONE = gpus(24)
TWO = gpus(24, 24)
MIXED = gpus(24, 24, 80)  # the 2 x 24 GB + 1 x 80 GB
FOUR = gpus(16, 24, 48, 80)
EIGHT = gpus(80, 80, 80, 80, 40, 40, 40, 40)

PLACE_CASES = [
    pytest.param(ONE, [], 10, 3, Placement(("cuda:0",)), id="an empty GPU takes the model"),
    pytest.param(MIXED, [], 10, 9, Placement(("cuda:2",)), id="most free memory first: the 80 GB"),
    pytest.param(gpus(24, 24, free={0: 14}), [model("a", "cuda:0", 10)], 10, 9,
                 Placement(("cuda:1",)), id="the next model goes to the other GPU"),
    pytest.param(gpus(24, 24, 80, free={2: 10}), [model("big", "cuda:2", 70, idle=False)], 20, 9,
                 Placement(("cuda:0",)), id="past a busy 80 GB onto a 24 GB with room"),
    pytest.param(gpus(24, free={0: 4}),
                 [model("old", "cuda:0", 10, last=1), model("new", "cuda:0", 10, last=2)], 10, 9,
                 Placement(("cuda:0",), ("old",)), id="evicts the least recently used idle model"),
    pytest.param(gpus(24, free={0: 4}),
                 [model("a", "cuda:0", 10, last=1), model("b", "cuda:0", 10, last=2)], 20, 9,
                 Placement(("cuda:0",), ("a", "b")), id="evicts as many as it takes"),
    pytest.param(gpus(24, free={0: 4}), [model("busy", "cuda:0", 20, idle=False)], 10, 9,
                 Placement(), id="never evicts a busy model: wait"),
    pytest.param(gpus(24, free={0: 4}),
                 [model("busy", "cuda:0", 10, idle=False), model("idle", "cuda:0", 10, last=9)],
                 20, 9, Placement(), id="idle models alone are not enough: wait"),
    pytest.param(gpus(24, 24, free={0: 23, 1: 23}),
                 [model("a", "cuda:0", 1, last=5), model("b", "cuda:1", 1, last=1)], 1, 2,
                 Placement(("cuda:0",), ("b",)),
                 id="the model limit evicts the least recently used anywhere"),
    pytest.param(gpus(24, 24, free={0: 23, 1: 23}),
                 [model("a", "cuda:0", 1, idle=False), model("b", "cuda:1", 1, idle=False)], 1, 2,
                 Placement(), id="the model limit with every model busy: wait"),
    pytest.param(gpus(24, 24, free={0: 4, 1: 14}),
                 [model("x", "cuda:0", 10, last=1), model("y", "cuda:0", 10, last=2),
                  model("z", "cuda:1", 10, last=3)], 20, 9,
                 Placement(("cuda:1",), ("z",)), id="the GPU needing the fewest evictions"),
    pytest.param(MIXED, [model("idle", "cuda:0", 14)], 100, 9, Placement(never_fits=True),
                 id="larger than every GPU: no eviction, never fits whole"),
    pytest.param(gpus(24, free={0: 14}), [], 20, 9, Placement(never_fits=True),
                 id="memory other programs hold is not ours to reclaim"),
    pytest.param(ONE, [model("coming", "cuda:0", 10, idle=False, loading=True)], 20, 9,
                 Placement(), id="a load in flight counts before the GPU shows it"),
    pytest.param(cpu(16, 8), [], 12, 3, Placement(("cpu",)),
                 id="an empty CPU takes a model above free RAM (weights are mapped)"),
    pytest.param(cpu(16, 7), [model("small", "cpu", 1)], 12, 3, Placement(("cpu",), ("small",)),
                 id="a CPU empties itself for a model above free RAM"),
    pytest.param(cpu(16, 16), [], 20, 3, Placement(never_fits=True),
                 id="a model above the CPU's total never fits"),
    pytest.param(gpus(80, 80, 80, 80, 40, 40, 40, 40, free={0: 20, 1: 30, 2: 10, 3: 50}),
                 [model(f"m{i}", f"cuda:{i}", size) for i, size in enumerate((60, 50, 70, 30))],
                 45, 9, Placement(("cuda:3",)), id="eight GPUs: the one with most free memory"),
    pytest.param(gpus(16, 24, 48, 80, free={2: 8, 3: 10}),
                 [model("a", "cuda:2", 40, last=1), model("b", "cuda:3", 35, last=2),
                  model("c", "cuda:3", 35, last=3)], 46, 9,
                 Placement(("cuda:2",), ("a",)), id="four GPUs: one eviction beats two"),
]


@pytest.mark.parametrize("devices,loaded,need_gb,max_loaded,expected", PLACE_CASES)
def test_place(devices: list[Device], loaded: list[LoadedModel], need_gb: int, max_loaded: int,
               expected: Placement) -> None:
    assert place(devices, loaded, need(need_gb), Limits(max_loaded)) == expected


def test_gpu_overhead_is_kept_free() -> None:
    assert place(ONE, [], need(23), Limits(3, gpu_overhead=2 * GB)) == Placement(never_fits=True)
    assert place(ONE, [], need(22), Limits(3, gpu_overhead=2 * GB)) == Placement(("cuda:0",))


def test_a_replica_goes_to_a_device_without_one() -> None:
    devices = gpus(24, 80, free={1: 70})
    loaded = [model("m-1", "cuda:1", 10, idle=False, key="m")]
    assert place(devices, loaded, need(10), Limits(9), exclude=frozenset({"cuda:1"})) == \
        Placement(("cuda:0",))


def test_a_replica_evicts_nothing() -> None:
    devices = gpus(24, 24, free={0: 14, 1: 4})
    loaded = [model("m-1", "cuda:0", 10, idle=False, key="m"), model("other", "cuda:1", 20)]
    assert place(devices, loaded, need(10), Limits(9), exclude=frozenset({"cuda:0"}),
                 evict=False) == Placement()


def test_a_replica_waits_for_nothing_at_the_model_limit() -> None:
    loaded = [model("m-1", "cuda:0", 10, idle=False, key="m"), model("other", "cuda:1", 1)]
    assert place(gpus(24, 24, free={0: 14, 1: 23}), loaded, need(10), Limits(2),
                 exclude=frozenset({"cuda:0"}), evict=False) == Placement()


SPLIT_CASES = [
    pytest.param(TWO, [], 30, False, Placement(("cuda:0", "cuda:1"), shares=shares(24, 23)),
                 id="2 x 24 GB hold 30 GB"),
    pytest.param(gpus(24, 24, 80, free={2: 0}), [model("big", "cuda:2", 80, idle=False)], 40,
                 False, Placement(("cuda:0", "cuda:1"), shares=shares(24, 23)),
                 id="around a full, busy 80 GB"),
    pytest.param(FOUR, [], 100, False, Placement(("cuda:3", "cuda:2"), shares=shares(80, 47)),
                 id="as few GPUs as will do, largest first"),
    pytest.param(FOUR, [], 30, True,
                 Placement(("cuda:3", "cuda:2", "cuda:1", "cuda:0"),
                           shares=shares(80, 47, 23, 15)),
                 id="spread: over every GPU"),
    pytest.param(gpus(24, 24, free={0: 4}), [model("idle", "cuda:0", 20)], 30, False,
                 Placement(("cuda:0", "cuda:1"), ("idle",), shares=shares(24, 23)),
                 id="evicts idle models when only that makes room"),
    pytest.param(gpus(24, 24, free={0: 4}), [model("busy", "cuda:0", 20, idle=False)], 30, False,
                 Placement(), id="waits for a busy model"),
    pytest.param(TWO, [], 60, False, Placement(never_fits=True),
                 id="more than all GPUs together"),
    pytest.param(ONE, [], 30, False, Placement(never_fits=True), id="one GPU cannot split"),
    pytest.param(EIGHT, [], 200, False,
                 Placement(("cuda:0", "cuda:1", "cuda:2"), shares=shares(80, 79, 79)),
                 id="eight GPUs: three 80 GB ones"),
]


@pytest.mark.parametrize("devices,loaded,need_gb,spread,expected", SPLIT_CASES)
def test_place_split(devices: list[Device], loaded: list[LoadedModel], need_gb: int,
                     spread: bool, expected: Placement) -> None:
    assert place_split(devices, loaded, need(need_gb), Limits(9), spread=spread) == expected


def test_free_memory_is_the_smaller_of_the_books_and_the_device() -> None:
    [device] = gpus(24, free={0: 10})
    assert free_memory(device, [], 0) == 10 * GB  # another program holds 14 GB
    assert free_memory(device, [model("ours", "cuda:0", 20)], 0) == 4 * GB  # not yet visible
    assert free_memory(device, [], 2 * GB) == 8 * GB


@pytest.mark.parametrize("devices,expected", [(ONE, 3), (MIXED, 9), (EIGHT, 24), (cpu(8, 8), 3)])
def test_auto_max_loaded_is_three_per_device(devices: list[Device], expected: int) -> None:
    assert auto_max_loaded(devices) == expected


def replicas(*free_slots: int, loading: Sequence[int] = ()) -> list[Replica]:
    return [Replica(free, i not in loading) for i, free in enumerate(free_slots)]


@pytest.mark.parametrize("states,expected", [
    (replicas(2, 5, 1), 1),
    (replicas(3, 3), 0),
    (replicas(0, 0), None),
    (replicas(0, 16, loading=[1]), None),
    ([], None),
], ids=["most free slots", "first on a tie", "all full", "a loading replica takes nothing",
        "no replica"])
def test_pick_replica(states: list[Replica], expected: int | None) -> None:
    assert pick_replica(states) == expected


@pytest.mark.parametrize("states,waiting,limit,expected", [
    (replicas(0), 3, 2, True),
    (replicas(0, 0), 3, 2, False),
    (replicas(0, 4, loading=[1]), 3, 3, False),
    (replicas(0), 0, 2, False),
    (replicas(0, 1), 3, 3, False),
    ([], 3, 2, False),
], ids=["all full and requests wait", "at the replica limit", "one is loading already",
        "nobody waits", "a slot is free", "no first runner yet"])
def test_want_replica(states: list[Replica], waiting: int, limit: int, expected: bool) -> None:
    assert want_replica(states, waiting, limit) is expected


def test_a_set_parallel_gives_each_slot_a_whole_context() -> None:
    assert kv_plan(num_ctx=2048, parallel=3) == (3, 6144)


def test_batch_invariant_mode_runs_one_sequence_at_a_time_whatever_parallel_says() -> None:
    assert kv_plan(num_ctx=2048, parallel=0, batch_invariant=True) == (1, 2048)
    assert kv_plan(num_ctx=2048, parallel=8, batch_invariant=True) == (1, 2048)


@pytest.mark.parametrize("num_ctx,slots", [(512, 16), (4096, 32), (8192, 64), (131072, 64)])
def test_auto_parallel_shares_four_contexts_of_cells_among_16_to_64_slots(
        num_ctx: int, slots: int) -> None:
    assert kv_plan(num_ctx, parallel=0) == (slots, 4 * num_ctx)


@pytest.mark.parametrize("cache_type,slots,cells", [("f16", 32, 16384), ("q8_0", 60, 30840),
                                                     ("q4_0", 64, 58254)])
def test_a_quantized_kv_cache_holds_more_cells_in_the_same_memory(
        cache_type: str, slots: int, cells: int) -> None:
    assert kv_plan(4096, parallel=0, cell_scale=kv_cell_scale(cache_type)) == (slots, cells)


def test_a_set_parallel_keeps_a_whole_context_per_slot_whatever_the_cache_type() -> None:
    assert kv_plan(2048, parallel=3, cell_scale=kv_cell_scale("q4_0")) == (3, 6144)


@pytest.mark.parametrize("devices,overhead_gb,expected", [
    (cpu(8, 8), 0, 4096), (gpus(16), 0, 4096), (gpus(24), 0, 32768), (gpus(24, 24), 0, 262144),
    (gpus(80), 0, 262144), (gpus(48), 2, 32768),
], ids=["cpu only", "16 GB", "24 GB", "two 24 GB", "80 GB", "48 GB less 2 GB of overhead"])
def test_the_automatic_context_length_follows_the_gpus_memory_as_ollama(
        devices: list[Device], overhead_gb: int, expected: int) -> None:
    assert auto_context_length(devices, overhead_gb * GB) == expected

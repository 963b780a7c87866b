"""The whole -> split -> partial offload -> error plan (scheduler/plan.py), without a scheduler:
plain devices, bookings and model sizes in, a Plan (or None: wait) out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import pytest

from scheduler.devices import Device
from scheduler.errors import FitsNowhere
from scheduler.memory import ModelMemory
from scheduler.placement import Limits, LoadedModel
from scheduler.plan import ALL_LAYERS, Plan, Room, Wanted, plan

GB = 1 << 30


def gpus(*sizes: int, free: dict[int, int] | None = None) -> list[Device]:
    """GPUs of these sizes in GB; `free` overrides what a GPU reports free (other programs)."""
    free = free or {}
    return [Device(f"cuda:{i}", "GPU", size * GB, free.get(i, size) * GB)
            for i, size in enumerate(sizes)]


CPU = [Device("cpu", "cpu", 64 * GB, 64 * GB)]


def model(layers: int = 4, num_gpu: int = -1, replica_of: Sequence[str] | None = None) -> Wanted:
    """A model of `layers` blocks of 1 GB each, a negligible cache and head, on one slot."""
    memory = ModelMemory(layers=(GB,) * layers, input_bytes=0, output_bytes=0, tied_output=False,
                         kv_bytes_per_cell=0, n_embd=8, n_head=1, n_vocab=1000)
    return Wanted(memory, slots=1, kv_cells=512, num_gpu=num_gpu,
                  replica_of=None if replica_of is None else frozenset(replica_of))


def booked(model_id: str, device: str, size: int, idle: bool = True) -> LoadedModel:
    """A runner holding `size` GB on `device` (the device's own free figure shows it too)."""
    return LoadedModel(model_id, model_id, {device: size * GB}, idle, last_used=0)


def room(devices: list[Device], *, loaded: Sequence[LoadedModel] = (), ram_free: int = 64,
         offloading: Sequence[str] | None = None, workers_up: bool = True,
         spread: bool = False, max_loaded: int = 9) -> Room:
    """`offloading` defaults to every GPU (llama.cpp built with CUDA)."""
    gpu_ids = [d.id for d in devices if d.is_gpu]
    return Room(devices, Device("cpu", "cpu", 64 * GB, ram_free * GB), loaded, Limits(max_loaded),
                frozenset(gpu_ids if offloading is None else offloading), workers_up, spread)


@dataclass(frozen=True)
class Outcome:
    """What a case checks of a plan: where, how many layers on the GPU, what is evicted."""

    devices: tuple[str, ...]
    layers: int
    evict: tuple[str, ...] = ()


def outcome(p: Plan | None) -> Outcome | None:
    return None if p is None else Outcome(p.devices, p.n_gpu_layers, p.evict)


CASES = [
    pytest.param(room(gpus(24, 48)), model(), Outcome(("cuda:1",), ALL_LAYERS),
                 id="whole, every layer, on the GPU with most free memory"),
    pytest.param(room(CPU), model(), Outcome(("cpu",), 0), id="CPU only: no layer offloaded"),
    pytest.param(room(gpus(24), offloading=[]), model(), Outcome(("cuda:0",), 0),
                 id="a GPU whose worker cannot offload runs it like a CPU"),
    pytest.param(room(gpus(24, 24, 24, 24)), model(layers=40), Outcome(("cuda:0", "cuda:1"),
                                                                       ALL_LAYERS),
                 id="split over 2 of 4 GPUs when no single one holds it"),
    pytest.param(room(gpus(24, 24, 24), spread=True), model(),
                 Outcome(("cuda:0", "cuda:1", "cuda:2"), ALL_LAYERS),
                 id="spread: even a small model over every GPU"),
    pytest.param(room(gpus(8)), model(layers=20), Outcome(("cuda:0",), 7),
                 id="partial offload: the layers that fit the GPU, the rest in RAM"),
    pytest.param(room(gpus(24, free={0: 4}), loaded=[booked("idle", "cuda:0", 20)]), model(),
                 Outcome(("cuda:0",), ALL_LAYERS, ("idle",)), id="evicts an idle runner"),
    pytest.param(room(gpus(24, free={0: 4}), loaded=[booked("busy", "cuda:0", 20, idle=False)]),
                 model(), None, id="a busy runner holds the memory: wait"),
    pytest.param(room(gpus(24, 24, free={0: 4, 1: 4}),
                      loaded=[booked("a", "cuda:0", 20, idle=False),
                              booked("b", "cuda:1", 20, idle=False)]),
                 model(layers=30), None, id="a split that busy runners block: wait"),
    pytest.param(room(gpus(24), workers_up=False), model(), None,
                 id="a worker restarting: nothing is decided"),
    pytest.param(room(gpus(24, 24)), model(replica_of=["cuda:0"]), Outcome(("cuda:1",),
                                                                         ALL_LAYERS),
                 id="a replica goes where its model is not"),
    pytest.param(room(gpus(24, 24, free={1: 4}), loaded=[booked("idle", "cuda:1", 20)]),
                 model(replica_of=["cuda:0"]), None,
                 id="a replica evicts nothing: no replica"),
    pytest.param(room(gpus(24)), model(num_gpu=2), Outcome(("cuda:0",), 2),
                 id="num_gpu fixes the layers on the GPU even where all would fit"),
    pytest.param(room(gpus(24)), model(num_gpu=0), Outcome(("cuda:0",), 0),
                 id="num_gpu 0: nothing on the GPU"),
    pytest.param(room(gpus(24)), model(num_gpu=99), Outcome(("cuda:0",), 5),
                 id="num_gpu past the model's layers: all of them, and the head"),
    pytest.param(room(CPU), model(num_gpu=3), Outcome(("cpu",), 0),
                 id="num_gpu means nothing without a GPU"),
    pytest.param(room(gpus(24, 48)),
                 model(num_gpu=3, replica_of=["cuda:1"]), Outcome(("cuda:0",), 3),
                 id="a replica with fixed layers goes where its model is not"),
]


@pytest.mark.parametrize("where,wanted,expected", CASES)
def test_plan(where: Room, wanted: Wanted, expected: Outcome | None) -> None:
    assert outcome(plan(wanted, where)) == expected


def test_a_split_books_each_gpu_its_share_and_a_compute_buffer() -> None:
    p = plan(model(layers=40), room(gpus(24, 24)))
    assert p is not None and set(p.memory) == {"cuda:0", "cuda:1"}
    assert sum(p.shares) == pytest.approx(1.0)
    assert sum(p.memory.values()) == pytest.approx(p.estimate.vram + p.estimate.compute_gpu, abs=2)


def test_a_partial_offload_books_its_vram_on_the_gpu_and_the_rest_in_ram() -> None:
    p = plan(model(layers=20), room(gpus(8)))
    assert p is not None and p.memory == {"cuda:0": p.estimate.vram}
    assert p.estimate.vram <= 8 * GB < p.estimate.total


def test_a_whole_model_on_a_cpu_books_all_of_it_there() -> None:
    p = plan(model(), room(CPU))
    assert p is not None and p.memory == {"cpu": p.estimate.total}


def test_a_model_that_fits_nowhere_names_what_it_needs_and_what_is_free() -> None:
    with pytest.raises(FitsNowhere, match=r"requires more memory than is free: 20\.0 GiB in all "
                                          r"\(free: cuda:0 8\.0 GiB, RAM 4\.0 GiB\)"):
        plan(model(layers=20), room(gpus(8), ram_free=4))


def test_fixed_layers_no_gpu_could_hold_are_an_error() -> None:
    with pytest.raises(FitsNowhere):
        plan(model(layers=20, num_gpu=20), room(gpus(8)))


def test_fixed_layers_whose_rest_ram_cannot_hold_are_an_error() -> None:
    with pytest.raises(FitsNowhere, match="RAM 2.0 GiB"):
        plan(model(layers=20, num_gpu=2), room(gpus(8), ram_free=2))


def test_a_model_larger_than_the_cpu_is_an_error_naming_the_cpu() -> None:
    with pytest.raises(FitsNowhere, match=r"100\.0 GiB in all \(free: cpu 64\.0 GiB\)$"):
        plan(model(layers=100), room(CPU))

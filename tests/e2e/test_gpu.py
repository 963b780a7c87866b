"""On a real NVIDIA GPU (marked `gpu`; skipped, saying so, where NVML finds none): the model placed
on the device and wholly offloaded, kept off it by `num_gpu` 0, a greedy answer that repeats
itself, and a split over two GPUs by `tensor_split`. `bench/gpu.sh` runs these with the GPU bench."""

from __future__ import annotations

import re
from typing import Callable

import pytest

from tests.e2e.conftest import MODEL
from tests.e2e.server import Server
from tests.unit.test_devices import nvml_gpus

GPUS = nvml_gpus()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(GPUS == 0, reason="needs an NVIDIA GPU")]
GREEDY = {"num_predict": 16, "temperature": 0}


def answer(srv: Server, **options: object) -> dict:
    reply = srv.post("/api/generate", {"model": MODEL, "prompt": "Name three rivers.",
                                       "stream": False, "options": {**GREEDY, **options}})
    assert reply.status == 200, reply.body
    return reply.json()


def placements(srv: Server) -> list[tuple[str, int, int]]:
    """(device, layers on the GPU, layers in all) of each load the scheduler logged."""
    return [(device, int(on), int(of)) for device, on, of in re.findall(
        r"loading \S+ on (\S+): .* (\d+) of (\d+) layers\)", srv.log())]


def test_the_model_is_wholly_offloaded_to_the_gpu(make_server: Callable[..., Server]) -> None:
    srv = make_server()
    assert answer(srv)["eval_count"] > 0
    [(device, on, of)] = placements(srv)
    assert device == "cuda:0" and on == of
    [loaded] = srv.get("/api/ps").json()["models"]
    # The token embeddings and the logits buffer stay in host memory, as llama.cpp keeps them.
    assert 0 < loaded["size_vram"] < loaded["size"]


def test_num_gpu_zero_keeps_the_model_on_the_cpu(make_server: Callable[..., Server]) -> None:
    srv = make_server()
    answer(srv, num_gpu=0)
    [loaded] = srv.get("/api/ps").json()["models"]
    assert loaded["size_vram"] == 0


def test_a_greedy_answer_on_the_gpu_repeats_itself(make_server: Callable[..., Server]) -> None:
    srv = make_server()
    first = answer(srv)["response"]
    assert first.strip() and answer(srv)["response"] == first


def used_memory() -> list[int]:
    """Bytes in use on each GPU, as NVML reports them."""
    import pynvml  # noqa: PLC0415 - nvidia-ml-py: present, but only a GPU answers it

    pynvml.nvmlInit()
    try:
        return [pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(i)).used
                for i in range(pynvml.nvmlDeviceGetCount())]
    finally:
        pynvml.nvmlShutdown()


@pytest.mark.skipif(GPUS < 2, reason="needs two NVIDIA GPUs")
def test_spread_splits_the_model_over_two_gpus(make_server: Callable[..., Server]) -> None:
    before = used_memory()
    srv = make_server(OLLAMA_SCHED_SPREAD="1")
    assert answer(srv)["eval_count"] > 0
    grown = [after - was for after, was in zip(used_memory(), before)]
    assert sum(1 for g in grown if g > 64 << 20) >= 2, grown  # a share of it on each of two

"""OLLAMA_* settings: defaults, accepted forms, and one-line errors naming the variable."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from server.settings import SettingsError, load, parse_host


def test_defaults() -> None:
    s = load({})
    assert (s.host, s.port) == ("127.0.0.1", 11434)
    assert s.models_dir == Path("~/.ollama/models").expanduser()
    assert s.keep_alive == 300 and s.num_parallel == 0 and s.max_queue == 512
    assert s.context_length == 4096 and s.debug is False


@pytest.mark.parametrize("raw,expected", [
    ("0.0.0.0", ("0.0.0.0", 11434)), ("localhost:8080", ("localhost", 8080)),
    ("http://10.1.2.3:9000", ("10.1.2.3", 9000)), ("[::1]:7000", ("::1", 7000)),
    (":5000", ("127.0.0.1", 5000)),
])
def test_host_forms(raw: str, expected: tuple[str, int]) -> None:
    assert parse_host(raw) == expected


def test_keep_alive_accepts_durations_seconds_and_negative_forever() -> None:
    assert load({"OLLAMA_KEEP_ALIVE": "1h30m"}).keep_alive == 5400
    assert load({"OLLAMA_KEEP_ALIVE": "90"}).keep_alive == 90
    assert load({"OLLAMA_KEEP_ALIVE": "-1"}).keep_alive == math.inf


@pytest.mark.parametrize("name,value", [
    ("OLLAMA_NUM_PARALLEL", "-3"), ("OLLAMA_MAX_QUEUE", "many"), ("OLLAMA_HOST", "host:port"),
    ("OLLAMA_CONTEXT_LENGTH", "-5"), ("OLLAMA_KEEP_ALIVE", "5 minutes"), ("OLLAMA_DEBUG", "maybe"),
])
def test_bad_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError) as info:
        load({name: value})
    message = str(info.value)
    assert message.startswith(f"{name}={value!r} is invalid") and "\n" not in message


@pytest.mark.parametrize("raw", ["auto", "0", "AUTO"])
def test_num_parallel_auto_or_zero_sizes_slots_by_memory(raw: str) -> None:
    assert load({"OLLAMA_NUM_PARALLEL": raw}).num_parallel == 0


def test_batch_invariant_mode_is_off_unless_asked() -> None:
    assert load({}).batch_invariant is False
    assert load({"CORRAL_BATCH_INVARIANT": "1"}).batch_invariant is True


def test_num_parallel_beyond_llamas_sequence_limit_is_refused() -> None:
    with pytest.raises(SettingsError, match="OLLAMA_NUM_PARALLEL"):
        load({"OLLAMA_NUM_PARALLEL": "1000"})


def test_model_and_replica_limits_are_auto_unless_set() -> None:
    s = load({})
    assert (s.max_loaded_models, s.max_replicas) == (0, 0)
    s = load({"OLLAMA_MAX_LOADED_MODELS": "2", "CORRAL_MAX_REPLICAS": "auto"})
    assert (s.max_loaded_models, s.max_replicas) == (2, 0)


def test_gpu_overhead_is_bytes_and_spread_a_switch() -> None:
    s = load({"OLLAMA_GPU_OVERHEAD": "1073741824", "OLLAMA_SCHED_SPREAD": "1"})
    assert (s.gpu_overhead, s.sched_spread) == (1 << 30, True)
    with pytest.raises(SettingsError, match="OLLAMA_GPU_OVERHEAD"):
        load({"OLLAMA_GPU_OVERHEAD": "-1"})

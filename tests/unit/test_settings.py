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
    assert s.context_length == 0 and s.debug is False  # 0: by the GPUs' memory
    assert (s.flash_attention, s.kv_cache_type, s.load_timeout) == (None, "f16", 300)


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


@pytest.mark.parametrize("raw,expected", [("true", True), ("0", False), ("auto", None)])
def test_flash_attention_is_on_off_or_auto(raw: str, expected: bool | None) -> None:
    assert load({"OLLAMA_FLASH_ATTENTION": raw}).flash_attention is expected


def test_an_unknown_kv_cache_type_stops_the_start_naming_the_choices() -> None:
    with pytest.raises(SettingsError, match="must be one of f16, q8_0, q4_0"):
        load({"OLLAMA_KV_CACHE_TYPE": "q5_1"})


def test_a_quantized_kv_cache_without_flash_attention_stops_the_start() -> None:
    with pytest.raises(SettingsError, match="needs flash attention"):
        load({"OLLAMA_KV_CACHE_TYPE": "Q8_0", "OLLAMA_FLASH_ATTENTION": "false"})


def test_a_load_timeout_of_zero_is_no_limit() -> None:
    assert load({"OLLAMA_LOAD_TIMEOUT": "0"}).load_timeout == math.inf

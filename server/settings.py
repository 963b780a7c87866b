"""Every server setting: the OLLAMA_* environment variables, their defaults and help text.

Values are read once at start. A bad value raises `SettingsError` naming the variable; the CLI
prints that one line and exits, so a misconfigured systemd unit fails loudly and early.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping
from urllib.parse import urlsplit

from scheduler.memory import KV_CACHE_BYTES
from server.durations import parse_duration


MAX_SLOTS = 256  # LLAMA_MAX_SEQ; also keeps every step's decode tokens within one batch


class SettingsError(ValueError):
    pass


@dataclass(frozen=True)
class Settings:
    host: str
    port: int
    models_dir: Path
    noprune: bool  # OLLAMA_NOPRUNE: a pull or create keeps the blobs it made unused
    keep_alive: float  # seconds; math.inf = forever
    num_parallel: int  # 0 = auto: as many sequences as the KV cache's cells allow
    max_queue: int
    max_loaded_models: int  # 0 = auto: 3 per device
    max_replicas: int  # CORRAL_MAX_REPLICAS; 0 = auto: one per device
    sched_spread: bool  # OLLAMA_SCHED_SPREAD: split every model over all GPUs
    gpu_overhead: int  # OLLAMA_GPU_OVERHEAD: bytes of every GPU left alone
    context_length: int  # 0: by the GPUs' memory (placement.auto_context_length)
    flash_attention: bool | None  # OLLAMA_FLASH_ATTENTION; None: llama.cpp decides (auto)
    kv_cache_type: str  # OLLAMA_KV_CACHE_TYPE: f16, q8_0 or q4_0
    load_timeout: float  # OLLAMA_LOAD_TIMEOUT: seconds a load may take; inf: no limit
    speculative: str  # CORRAL_SPECULATIVE: prompt-lookup drafts in the batch: auto, always, off
    debug: bool
    body_idle_timeout: float  # seconds a request body may stall before the request fails
    idle_timeout: float  # seconds a connection may take to send a whole request head
    origins: tuple[str, ...]  # extra allowed browser origins (OLLAMA_ORIGINS)
    api_key: str  # CORRAL_API_KEY; "" = no key needed
    api_key_file: Path | None  # CORRAL_API_KEY_FILE: one key per line, re-read on SIGHUP
    import_dirs: tuple[Path, ...]  # CORRAL_ALLOWED_IMPORT_DIRS: where create's FROM may read
    worker_timeout: float  # CORRAL_WORKER_TIMEOUT: a worker silent this long is restarted
    batch_invariant: bool  # CORRAL_BATCH_INVARIANT: output independent of what shares a batch
    ray_address: str  # CORRAL_RAY_ADDRESS: "" = this machine's devices; else a Ray cluster's


@dataclass(frozen=True)
class _Var:
    name: str
    default: str
    help: str


VARIABLES: tuple[_Var, ...] = (
    _Var("OLLAMA_HOST", "127.0.0.1:11434",
         "Address to listen on: host, host:port or http://host:port."),
    _Var("OLLAMA_MODELS", "~/.ollama/models",
         "Model store (Ollama's layout: manifests/ and blobs/), so an Ollama store is served as is."),
    _Var("OLLAMA_NOPRUNE", "false",
         "Keep the blobs a pull or create of a model leaves unused (by default they are "
         "removed once no other model names them)."),
    _Var("OLLAMA_KEEP_ALIVE", "5m",
         "How long an idle model stays loaded: a duration (5m, 1h) or seconds; negative = forever."),
    _Var("OLLAMA_NUM_PARALLEL", "auto",
         "Sequences decoded together per loaded model (continuous-batching slots). auto: the "
         "KV cache holds 4 x num_ctx tokens, shared by up to 16-64 sequences that are admitted "
         "while free cells allow; a number N gives N slots of a full num_ctx each."),
    _Var("OLLAMA_MAX_QUEUE", "512",
         "Requests that may wait for a slot before the server answers 503 server busy."),
    _Var("OLLAMA_MAX_LOADED_MODELS", "auto",
         "Models (replicas included) kept loaded at once, on all devices together, before the "
         "least recently used idle one is evicted. auto: 3 per GPU, or 3 on the CPU."),
    _Var("OLLAMA_SCHED_SPREAD", "false",
         "Split every model over all GPUs instead of placing it whole on one."),
    _Var("OLLAMA_GPU_OVERHEAD", "0",
         "Bytes of every GPU's memory that placement leaves alone (for other programs)."),
    _Var("CORRAL_MAX_REPLICAS", "auto",
         "Copies of one model loaded on different devices at most. A replica is loaded when all "
         "slots of a model are busy, requests wait and another device has free memory; each "
         "request goes to the replica with the most free slots, and a replica left idle while "
         "another remains is unloaded. auto: one per device."),
    _Var("OLLAMA_CONTEXT_LENGTH", "0",
         "Default context window (num_ctx) per sequence when neither model nor request sets one; "
         "0: by the GPUs' memory, as Ollama: 4096 under 24 GiB, 32768 under 48 GiB, else 262144 "
         "(never more than the model was trained for)."),
    _Var("OLLAMA_FLASH_ATTENTION", "auto",
         "Flash attention: true, false, or auto (llama.cpp uses it where the device has it)."),
    _Var("OLLAMA_KV_CACHE_TYPE", "f16",
         "The KV cache's type: f16, q8_0 (half the memory: ~1.9x the cells) or q4_0 (~3.6x); "
         "the quantized ones need flash attention."),
    _Var("OLLAMA_LOAD_TIMEOUT", "5m",
         "How long a model load may take before it fails (and its worker is restarted); 0 or "
         "negative: no limit."),
    _Var("CORRAL_SPECULATIVE", "auto",
         "Speculative decoding in the batch: a sequence whose recent tokens occurred before "
         "drafts what followed them (or a model's draft model guesses), verified in the same "
         "decode. auto: a draft "
         "is taken where its expected gain beats what verifying it costs on this device "
         "(measured at load); always: whenever one is found; off. A lone stream's answers are "
         "the same either way."),
    _Var("OLLAMA_DEBUG", "false", "Log debug detail (1/true/yes)."),
    _Var("OLLAMA_ORIGINS", "",
         "Extra browser origins allowed to call the API, comma-separated (wildcards: "
         "http://*.example.com); localhost and app schemes are always allowed."),
    _Var("CORRAL_API_KEY", "",
         "If set, every endpoint but GET / needs 'Authorization: Bearer <key>'."),
    _Var("CORRAL_API_KEY_FILE", "",
         "File of accepted API keys, one per line; re-read on SIGHUP."),
    _Var("CORRAL_ALLOWED_IMPORT_DIRS", "",
         "Folders (separated by ':') from which a Modelfile's FROM may import a GGUF file on "
         "this machine; none by default (clients upload through /api/blobs)."),
    _Var("CORRAL_REGISTRY_AUTH", "",
         "Registry credentials for pull/push, comma-separated host=user:password; otherwise "
         "those of ~/.docker/config.json (or $DOCKER_CONFIG) are used."),
    _Var("CORRAL_WORKER_TIMEOUT", "5m",
         "The longest a worker may stay silent (hung, stopped) before it is killed and "
         "restarted; its requests end with an error. A worker with requests in flight gets a "
         "shorter deadline from its recent step times (at least 5s)."),
    _Var("CORRAL_BATCH_INVARIANT", "false",
         "Make a seeded request's output independent of what else runs: one sequence at a "
         "time per model (others queue), in an emptied KV cache, no prompt cache reused. "
         "Costs the batching gain: see docs/performance.md."),
    _Var("CORRAL_RAY_ADDRESS", "",
         "Serve the devices of a Ray cluster instead of this machine's: auto (this machine is a "
         "node of the cluster), ray://host:port (Ray Client; the nodes must share the store's "
         "path) or the head's host:port. Needs the ray extra (pip install 'corral[ray]'); see "
         "docs/cluster.md."),
    _Var("CORRAL_BODY_IDLE_TIMEOUT", "60s",
         "How long a request body (an upload) may send nothing before the request fails."),
    _Var("CORRAL_IDLE_TIMEOUT", "30s",
         "How long a connection may take to send a whole request head, counted from when it "
         "opened or got its last answer, before it is closed: closes idle keep-alive "
         "connections and clients that send their headers a byte at a time."),
)


def help_text() -> str:
    return "\n".join(f"  {v.name:<26} {v.help} (default: {v.default})" for v in VARIABLES)


def load(environ: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if environ is None else environ

    def get(name: str, parse: Callable[[str], object]) -> object:
        default = next(v.default for v in VARIABLES if v.name == name)
        raw = env.get(name, "").strip() or default
        try:
            return parse(raw)
        except ValueError as exc:
            raise SettingsError(f"{name}={raw!r} is invalid: {exc}") from None

    host, port = get("OLLAMA_HOST", parse_host)  # type: ignore[misc]
    settings = Settings(
        host=host,
        port=port,
        # Absolute, so that the paths /api/show prints (FROM a blob) read back as paths.
        models_dir=get("OLLAMA_MODELS", lambda s: Path(s).expanduser().resolve()),  # type: ignore[arg-type]
        noprune=get("OLLAMA_NOPRUNE", _boolean),  # type: ignore[arg-type]
        keep_alive=get("OLLAMA_KEEP_ALIVE", parse_duration),  # type: ignore[arg-type]
        num_parallel=get("OLLAMA_NUM_PARALLEL", _slot_count),  # type: ignore[arg-type]
        max_queue=get("OLLAMA_MAX_QUEUE", _positive_int),  # type: ignore[arg-type]
        max_loaded_models=get("OLLAMA_MAX_LOADED_MODELS", _auto_count),  # type: ignore[arg-type]
        max_replicas=get("CORRAL_MAX_REPLICAS", _auto_count),  # type: ignore[arg-type]
        sched_spread=get("OLLAMA_SCHED_SPREAD", _boolean),  # type: ignore[arg-type]
        gpu_overhead=get("OLLAMA_GPU_OVERHEAD", _bytes),  # type: ignore[arg-type]
        context_length=get("OLLAMA_CONTEXT_LENGTH", _count),  # type: ignore[arg-type]
        flash_attention=get("OLLAMA_FLASH_ATTENTION", _auto_boolean),  # type: ignore[arg-type]
        kv_cache_type=get("OLLAMA_KV_CACHE_TYPE", _kv_cache_type),  # type: ignore[arg-type]
        load_timeout=get("OLLAMA_LOAD_TIMEOUT", _timeout),  # type: ignore[arg-type]
        speculative=get("CORRAL_SPECULATIVE", _speculative),  # type: ignore[arg-type]
        debug=get("OLLAMA_DEBUG", _boolean),  # type: ignore[arg-type]
        body_idle_timeout=get("CORRAL_BODY_IDLE_TIMEOUT", _positive_duration),  # type: ignore[arg-type]
        idle_timeout=get("CORRAL_IDLE_TIMEOUT", _positive_duration),  # type: ignore[arg-type]
        origins=get("OLLAMA_ORIGINS", _list),  # type: ignore[arg-type]
        api_key=get("CORRAL_API_KEY", str),  # type: ignore[arg-type]
        api_key_file=get("CORRAL_API_KEY_FILE", _optional_path),  # type: ignore[arg-type]
        import_dirs=get("CORRAL_ALLOWED_IMPORT_DIRS", _paths),  # type: ignore[arg-type]
        worker_timeout=get("CORRAL_WORKER_TIMEOUT", _positive_duration),  # type: ignore[arg-type]
        batch_invariant=get("CORRAL_BATCH_INVARIANT", _boolean),  # type: ignore[arg-type]
        ray_address=get("CORRAL_RAY_ADDRESS", str),  # type: ignore[arg-type]
    )
    if settings.kv_cache_type != "f16" and settings.flash_attention is False:
        raise SettingsError(f"OLLAMA_KV_CACHE_TYPE={settings.kv_cache_type} needs flash attention: "
                            "leave OLLAMA_FLASH_ATTENTION unset (auto) or set it true")
    return settings


def parse_host(raw: str) -> tuple[str, int]:
    """host, host:port, scheme://host:port, [v6]:port -> (host, port); Ollama's default port 11434."""
    text = raw if "://" in raw else f"http://{raw}"
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or parts.path not in ("", "/"):
        raise ValueError("expected host, host:port or http://host:port")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("port must be a number from 0 to 65535") from None
    return parts.hostname or "127.0.0.1", 11434 if port is None else port


def _whole_number(raw: str, least: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError("must be a whole number") from None
    if value < least:
        raise ValueError(f"must be at least {least}")
    return value


def _positive_int(raw: str) -> int:
    return _whole_number(raw, 1)


def _auto_count(raw: str) -> int:
    """A positive count, or 0 for "auto" (or 0, as Ollama writes it)."""
    return 0 if raw.lower() in ("auto", "0") else _positive_int(raw)


def _bytes(raw: str) -> int:
    return _whole_number(raw, 0)


def _slot_count(raw: str) -> int:
    value = _auto_count(raw)
    if value > MAX_SLOTS:
        raise ValueError(f"must be at most {MAX_SLOTS} (llama.cpp's sequence limit)")
    return value


def _positive_duration(raw: str) -> float:
    value = parse_duration(raw)
    if not 0 < value < float("inf"):
        raise ValueError("must be a positive duration")
    return value


def _list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.strip("\"'").split(",") if item.strip())


def _paths(raw: str) -> tuple[Path, ...]:
    return tuple(Path(item.strip()).expanduser() for item in raw.split(os.pathsep) if item.strip())


def _optional_path(raw: str) -> Path | None:
    return Path(raw).expanduser() if raw else None


def _count(raw: str) -> int:
    value = int(raw)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _speculative(raw: str) -> str:
    value = raw.lower()
    if value not in ("auto", "always", "off"):
        raise ValueError("must be auto, always or off")
    return value


def _auto_boolean(raw: str) -> bool | None:
    return None if raw.lower() == "auto" else _boolean(raw)


def _kv_cache_type(raw: str) -> str:
    value = raw.lower()
    if value not in KV_CACHE_BYTES:
        raise ValueError(f"must be one of {', '.join(KV_CACHE_BYTES)}")
    return value


def _timeout(raw: str) -> float:
    value = parse_duration(raw)
    return math.inf if value <= 0 else value


def _boolean(raw: str) -> bool:
    lowered = raw.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")

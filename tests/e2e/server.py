"""Starting a real corral server for tests, and a small HTTP client for talking to it."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bootstrap_store(models_dir: Path) -> None:
    """Registers gemma3:270m in a store through `corral bootstrap`, as `make serve` does."""
    env = {**os.environ, "OLLAMA_MODELS": str(models_dir)}
    subprocess.run([sys.executable, "-m", "server", "bootstrap"], env=env, check=True,
                   cwd=ROOT, stdout=subprocess.DEVNULL)



def create_tuned(srv: "Server", name: str, base: str, folder: Path) -> str:
    """Creates `name` from `base` (Gemma) with a LoRA adapter written into `folder`: other
    weights as far as the scheduler goes, so a runner of its own. Returns its full name."""
    from tests.gguf_files import gemma_lora  # noqa: PLC0415 - numpy and gguf only where used

    data = gemma_lora(folder / "lora.gguf").read_bytes()
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    assert srv.post(f"/api/blobs/{digest}", raw=data).status in (200, 201)
    reply = srv.post("/api/create", {"model": name, "from": base,
                                     "adapters": {"lora.gguf": digest}, "stream": False})
    assert reply.status == 200, reply.body
    return f"{name}:latest"

@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)

    def lines(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.body.splitlines() if line.strip()]


def _encoded(body: Any) -> bytes:
    """JSON as a client writes it; numbers past 64 bits too (as a hostile client sends them)."""
    try:
        return orjson.dumps(body)
    except TypeError:
        return json.dumps(body).encode()


@dataclass
class Server:
    models_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    log_path: Path | None = None
    devices: str = ""  # a simulated inventory, e.g. "cpu:4G,cpu:4G" (tests/e2e/simulated_server.py)

    @property
    def base(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 120) -> "Server":
        env = {**os.environ, "OLLAMA_MODELS": str(self.models_dir),
               "OLLAMA_HOST": self.base, **self.env}
        self.log_path = self.models_dir.parent / f"server-{self.port}.log"
        log = open(self.log_path, "wb")
        command = (["-m", "tests.e2e.simulated_server", self.devices] if self.devices
                   else ["-m", "server", "serve"])
        self.process = subprocess.Popen([sys.executable, *command], env=env,
                                        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            try:
                if self.request("GET", "/").status == 200:
                    return self
            except OSError:
                time.sleep(0.2)
        raise RuntimeError(f"server did not start:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)

    def request(self, method: str, path: str, body: Any = None, raw: bytes | None = None,
                timeout: float = 300) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            data = raw if raw is not None else (None if body is None else _encoded(body))
            conn.request(method, path, body=data)
            resp = conn.getresponse()
            return Reply(resp.status, dict(resp.getheaders()), resp.read())
        finally:
            conn.close()

    def post(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return self.request("POST", path, body, **kw)

    def get(self, path: str) -> Reply:
        return self.request("GET", path)

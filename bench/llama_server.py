#!/usr/bin/env python3
"""llama-server, the peer to beat, built from the llama.cpp that the llama-cpp-python sdist we
pin vendors, with the same flags `deploy/install.py` gives our build (CPU flags, no AMX, CUDA
where it builds with CUDA), and cached beside our wheel, so benches compare like with like.

    .venv/bin/python bench/llama_server.py        # prints the binary's path (builds it once)

The first run downloads the sdist from the package index and builds (minutes); later runs find
the binary in ~/.cache/corral/llama-server/<key>/ (the key covers the version and the flags).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deploy.install import LLAMA_CPP_PYTHON, cmake_args  # noqa: E402


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "corral" / \
        "llama-server"


def llama_server() -> Path:
    """The cached llama-server binary, built first if need be."""
    args = cmake_args()
    key = hashlib.sha256(" ".join(["llama-server", LLAMA_CPP_PYTHON, *args]).encode()
                         ).hexdigest()[:16]
    binary = cache_dir() / key / "llama-server"
    if binary.exists():
        return binary
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary",
                        ":all:", "-d", tmp, LLAMA_CPP_PYTHON], check=True)
        [sdist] = Path(tmp).glob("llama_cpp_python-*.tar.gz")
        with tarfile.open(sdist) as archive:
            archive.extractall(tmp, filter="data")
        [source] = Path(tmp).glob("llama_cpp_python-*/vendor/llama.cpp")
        build = Path(tmp) / "build"
        subprocess.run(["cmake", "-S", str(source), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                        "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_SERVER=ON", "-DBUILD_SHARED_LIBS=OFF",
                        *args], check=True)
        subprocess.run(["cmake", "--build", str(build), "--target", "llama-server",
                        "-j", str(os.cpu_count() or 2)], check=True)
        partial = binary.with_name("llama-server.partial")
        partial.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(build / "bin" / "llama-server", partial)
        partial.rename(binary)  # only a finished build is ever found in the cache
    return binary


if __name__ == "__main__":
    print(llama_server())


class LlamaServer:
    """A running llama-server on a loopback port, serving one model file."""

    def __init__(self, model: Path, threads: int, parallel: int, ctx_per_slot: int) -> None:
        self.port = _free_port()
        self.process = subprocess.Popen(
            [str(llama_server()), "-m", str(model), "--host", "127.0.0.1",
             "--port", str(self.port), "-t", str(threads), "-tb", str(threads),
             "-np", str(parallel), "-c", str(ctx_per_slot * parallel), "--kv-unified",
             "--no-webui"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._wait_ready()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("llama-server exited while starting")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError("llama-server did not become ready")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]

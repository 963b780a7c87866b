"""One real server (real workers, real Gemma 3 270M) shared by the end-to-end tests.

Tests that need their own settings or that stop the server start a private one with
`make_server`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.e2e.server import Server, bootstrap_store, free_port

MODEL = "gemma3:270m"
# Short generations keep the suite fast on 2 CPU cores; greedy makes outputs comparable.
QUICK = {"num_predict": 8, "temperature": 0}


@pytest.fixture(scope="session")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("store") / "models"
    bootstrap_store(path)
    return path


@pytest.fixture(scope="session")
def server(store_dir: Path) -> Iterator[Server]:
    srv = Server(store_dir).start()
    yield srv
    srv.stop()


@pytest.fixture
def make_server(store_dir: Path) -> Iterator[Callable[..., Server]]:
    """A private server with its own settings over the same store."""
    started: list[Server] = []

    def make(**env: str) -> Server:
        srv = Server(store_dir, env=env).start()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop(timeout=60)

REGISTRY = shutil.which("docker-registry")


def start_registry(root: Path, htpasswd: Path | None = None) -> tuple[str, subprocess.Popen]:
    """docker-registry serving a temp folder on a free loopback port (with htpasswd auth if given)."""
    if REGISTRY is None:  # CI must test against it: .ci/run installs it
        (pytest.fail if os.environ.get("CI") else pytest.skip)("needs Debian's docker-registry")
    address = f"127.0.0.1:{free_port()}"
    auth = (f"auth:\n  htpasswd:\n    realm: corral-test\n    path: {htpasswd}\n"
            if htpasswd else "")
    config = root / "config.yml"
    config.write_text(f"version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n"
                      f"    rootdirectory: {root / 'data'}\n  delete:\n    enabled: true\n"
                      f"http:\n  addr: {address}\n{auth}")
    process = subprocess.Popen([str(REGISTRY), "serve", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://{address}/v2/", timeout=2).close()
            return address, process
        except urllib.error.HTTPError:  # 401: up, and asking for credentials
            return address, process
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("docker-registry did not start") from None
            time.sleep(0.2)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real OCI registry (Debian's docker-registry) on a loopback port, for pull and push."""
    address, process = start_registry(tmp_path_factory.mktemp("registry"))
    yield address
    process.terminate()
    process.wait(10)


@pytest.fixture(scope="session")
def auth_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The same with htpasswd auth: user `corral`, password `s3cret`."""
    import bcrypt  # noqa: PLC0415

    root = tmp_path_factory.mktemp("auth-registry")
    htpasswd = root / "htpasswd"
    htpasswd.write_bytes(b"corral:" + bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)) + b"\n")
    address, process = start_registry(root, htpasswd)
    yield address
    process.terminate()
    process.wait(10)

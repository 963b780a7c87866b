"""One real server (real workers, real Gemma 3 270M) shared by the end-to-end tests.

Tests that need their own settings or that stop the server start a private one with
`make_server`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

import pytest

from tests.e2e.server import Server, bootstrap_store

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

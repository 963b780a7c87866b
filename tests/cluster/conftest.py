"""A local Ray cluster (a head and two worker nodes on this machine) and corral serving it.

The head offers no CPU, as docs/cluster.md sets up a front end's own node, so the workers run
on the two worker nodes; each offers one CPU, which makes it one CPU device of corral's
inventory (a node without GPUs is one CPU device), with a worker actor of its own.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Iterator

import pytest

from tests.e2e.server import Server, bootstrap_store

if importlib.util.find_spec("ray") is None:
    collect_ignore_glob = ["test_*.py"]  # without the ray extra there is nothing to run here

OBJECT_STORE = 80 << 20  # bytes per node: the cluster carries only small messages here


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    from ray.cluster_utils import Cluster  # noqa: PLC0415

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 0, "object_store_memory": OBJECT_STORE})
    for _ in range(2):
        cluster.add_node(num_cpus=1, object_store_memory=OBJECT_STORE)
    yield cluster
    cluster.shutdown()


@pytest.fixture(scope="module")
def corral(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The real server, its workers on the cluster's nodes."""
    store = tmp_path_factory.mktemp("store") / "models"
    bootstrap_store(store)
    # One slot per runner: a burst of requests for one model then calls for a replica.
    srv = Server(store, env={"CORRAL_RAY_ADDRESS": cluster.address,
                             "OLLAMA_NUM_PARALLEL": "1"}).start(timeout=180)
    yield srv
    srv.stop()


"""corral on a Ray cluster: models on the nodes' workers answer through one front end, replicas
on two nodes share a burst, and a node that leaves fails only its own requests."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Iterator

import orjson
import pytest

from tests.e2e.conftest import MODEL, QUICK
from tests.e2e.server import Server, create_tuned
from tests.e2e.test_scheduling import burst
from tests.e2e.test_serving import LONG, open_stream
from scheduler.worker import CRASH_MESSAGE

pytestmark = pytest.mark.cluster

TUNED = "cluster-tuned"


@pytest.fixture(scope="module")
def tuned(corral: Server, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Gemma with a LoRA adapter: other weights as far as the scheduler goes, so another runner."""
    return create_tuned(corral, TUNED, MODEL, tmp_path_factory.mktemp("lora"))


def generate(srv: Server, model: str) -> dict[str, Any]:
    """A templated prompt (the tuned model's answer to a raw "hi" can be over at once)."""
    reply = srv.post("/api/generate", {"model": model, "prompt": "hi", "stream": False,
                                       "options": QUICK})
    assert reply.status == 200, reply.body
    return reply.json()


def node_of(cluster: Any, srv: Server, model: str) -> Any:
    """The cluster node the server last loaded `model` on, from its log line
    "loading <model> on cpu@<node id prefix>"."""
    line = [ln for ln in srv.log().splitlines() if f"loading {model} on " in ln][-1]
    prefix = line.split(f"loading {model} on ")[1].split("@")[1].split(":")[0]
    [node] = [n for n in cluster.worker_nodes if n.node_id.startswith(prefix)]
    return node


def test_two_models_on_two_nodes_answer_through_one_front_end(
        cluster: Any, corral: Server, tuned: str) -> None:
    assert generate(corral, MODEL)["eval_count"] == QUICK["num_predict"]
    assert generate(corral, tuned)["eval_count"] == QUICK["num_predict"]
    assert node_of(cluster, corral, MODEL) is not node_of(cluster, corral, tuned)
    assert sorted(m["name"] for m in corral.get("/api/ps").json()["models"]) == sorted(
        [MODEL, tuned])


def test_replicas_of_one_model_on_two_nodes_share_8_concurrent_requests(corral: Server) -> None:
    generate(corral, MODEL)
    # The actors' processes, as their Ready messages named them: all on this machine here.
    workers = [int(line.split("(pid ")[1].split(",")[0]) for line in corral.log().splitlines()
               if "corral.scheduler: worker " in line and " started (pid " in line]
    replicas, work = burst(corral, workers)
    assert replicas == 2
    assert len(work) == 2 and min(work.values()) > 1.0, work  # both nodes decoded


@pytest.fixture
def driver(cluster: Any) -> Iterator[None]:
    """This test process as a Ray driver of the cluster."""
    import ray  # noqa: PLC0415

    ray.init(address=cluster.address)
    yield
    ray.shutdown()


def fetch_through_ray(blobs_dir: Path, missing: Path, cache: Path) -> str:
    """What a worker on a node without `missing` makes of it: its `localize` over a blob source
    serving `blobs_dir` (no CPU asked: corral's own workers hold the nodes' CPUs)."""
    import ray  # noqa: PLC0415

    from scheduler.ray_cluster import BlobActor, WorkerActor  # noqa: PLC0415

    source = BlobActor.options(num_cpus=0).remote(str(blobs_dir))
    worker = WorkerActor.options(num_cpus=0).remote({}, 1, False, source, str(cache))
    try:
        [path] = ray.get(worker.localize.remote([str(missing)]))
        return path
    finally:
        ray.kill(worker)
        ray.kill(source)


def test_a_node_without_the_stores_path_fetches_a_blob_once_by_digest(
        driver: None, tmp_path: Path) -> None:
    data = os.urandom(3 << 20)
    name = f"sha256-{hashlib.sha256(data).hexdigest()}"
    (tmp_path / "blobs").mkdir()
    (tmp_path / "blobs" / name).write_bytes(data)
    path = fetch_through_ray(tmp_path / "blobs", tmp_path / "elsewhere" / name, tmp_path / "cache")
    assert path == str(tmp_path / "cache" / name)
    assert Path(path).read_bytes() == data


def test_a_blob_that_does_not_match_its_digest_is_refused_on_the_node(
        driver: None, tmp_path: Path) -> None:
    import ray  # noqa: PLC0415

    name = f"sha256-{hashlib.sha256(b'the real weights').hexdigest()}"
    (tmp_path / "blobs").mkdir()
    (tmp_path / "blobs" / name).write_bytes(b"other bytes under that name")
    with pytest.raises(ray.exceptions.RayTaskError, match="arrived damaged"):
        fetch_through_ray(tmp_path / "blobs", tmp_path / "elsewhere" / name, tmp_path / "cache")
    assert not (tmp_path / "cache" / name).exists()


def test_a_second_front_end_leaves_the_first_ones_devices_alone(
        cluster: Any, corral: Server) -> None:
    second = Server(corral.models_dir, env={"CORRAL_RAY_ADDRESS": cluster.address}).start(
        timeout=180)
    try:
        assert "corral_device_memory_total_bytes{" not in second.get("/metrics").body.decode()
    finally:
        second.stop()
    assert generate(corral, MODEL)["eval_count"] == QUICK["num_predict"]


def test_a_node_removed_mid_stream_fails_its_request_and_the_next_runs_on_another_node(
        cluster: Any, corral: Server, tuned: str) -> None:
    conn, resp = open_stream(corral, LONG, model=tuned)  # one runner, on a node we can name
    lost = node_of(cluster, corral, tuned)
    cluster.remove_node(lost)
    lines = [orjson.loads(line) for line in resp.read().splitlines() if line.strip()]
    conn.close()
    assert lines[-1]["error"] == CRASH_MESSAGE
    assert generate(corral, tuned)["eval_count"] == QUICK["num_predict"]
    assert node_of(cluster, corral, tuned) is not lost
    assert corral.get("/").status == 200

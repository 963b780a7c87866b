"""corral on a Ray cluster: the cluster's devices as the inventory, each worker a Ray actor.

`connect` joins the cluster that CORRAL_RAY_ADDRESS names and asks every node what
`SystemInventory` sees there: its GPUs (as many as the node offers Ray), else its CPU. Device ids
carry the node (`cuda:0@1f3a9c0e`, `cpu@77b2e410`), so placement, eviction, replicas and
keep-alive work on them unchanged. Each device's worker is an `EngineActor` (workers/ray_actor.py)
pinned to its node, holding the device in Ray's books (`num_gpus=1`, or the node's cores) and
speaking the same protocol messages as a worker process, through `RayTransport`.

A worker actor is named after its device, cluster-wide: a second front end on the same cluster
sees the name taken and leaves that device to the first, so front ends share a cluster by
splitting its devices. A node that dies takes its devices out of the inventory; its requests
fail with the runner-stopped error and its models load elsewhere on their next request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import ray
from ray.exceptions import RayActorError, RayError, RayTaskError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from scheduler.devices import Device, SystemInventory
from scheduler.transport import STOP_TIMEOUT, OnClosed, OnMessage, TransportFactory
from scheduler.worker import WorkerDied
from workers import protocol
from workers.blobs import BlobSource
from workers.ray_actor import EngineActor

log = logging.getLogger("corral.cluster")

NAMESPACE = "corral"  # where the worker actors' names live, for every front end
NODES_TTL = 1.0  # seconds the cluster's list of live nodes is reused before it is asked again
RECEIVE_WAIT = 1.0  # seconds one receive call waits in the actor for the worker to say something
CACHE_DIR = "~/.cache/corral/blobs"  # on each node: blobs fetched from the front end


@dataclass(frozen=True)
class Seat:
    """Where a device's worker runs and what it holds in Ray's books."""

    node_id: str
    gpus: int  # GPUs it takes; 0 for a CPU worker
    threads: int  # llama.cpp threads (a CPU worker takes as many of Ray's CPUs)


def _probe() -> tuple[list[Device], Device, int]:
    """Run on a node: its GPUs and its RAM as corral sees them there, and its physical cores."""
    inventory = SystemInventory()
    gpus = [d for d in inventory.devices() if d.is_gpu]
    return gpus, inventory.host(), psutil.cpu_count(logical=False) or psutil.cpu_count() or 1


# A send and a receive at once, and loads fetching their weights on threads of their own.
WorkerActor = ray.remote(max_concurrency=2, concurrency_groups={"fetch": 4})(EngineActor)
BlobActor = ray.remote(BlobSource)
_PROBE = ray.remote(_probe)


def worker_name(device_id: str) -> str:
    return f"corral-worker-{device_id}"


def _on_node(node_id: str) -> NodeAffinitySchedulingStrategy:
    return NodeAffinitySchedulingStrategy(node_id, soft=False)


class RayInventory:
    """The devices of the cluster's live nodes, as found when the front end joined."""

    def __init__(self, seats: dict[str, tuple[Device, Seat]], hosts: dict[str, Device]) -> None:
        self._seats = seats  # by device id
        self._hosts = hosts  # by node id: its RAM
        self._lost: set[str] = set()  # device ids another front end has taken since
        self._alive: set[str] = set()
        self._checked = -NODES_TTL

    def devices(self) -> list[Device]:
        alive = self._alive_nodes()
        return [device for device_id, (device, seat) in self._seats.items()
                if seat.node_id in alive and device_id not in self._lost]

    def host(self) -> Device:
        """The RAM of the live node with the least free: where layers no GPU holds would go."""
        alive = self._alive_nodes()
        hosts = [h for node_id, h in self._hosts.items() if node_id in alive]
        return min(hosts, key=lambda h: h.free_memory, default=Device("cpu", "no node", 0, 0))

    def seat(self, device: Device) -> Seat:
        """A device's seat; for a split's group ("a+b"), one seat with all of its GPUs, which
        must be on one node."""
        seats = [self._seats[part][1] for part in device.id.split("+")]
        if len({s.node_id for s in seats}) > 1:
            raise WorkerDied(f"{device.id}: a model split over GPUs of different nodes is not "
                             "supported")
        return Seat(seats[0].node_id, sum(s.gpus for s in seats), max(s.threads for s in seats))

    def lose(self, device_id: str) -> None:
        self._lost.add(device_id)

    def forget_nodes(self) -> None:
        """A worker died: ask the cluster again which nodes live before the next placement."""
        self._checked = -NODES_TTL

    def _alive_nodes(self) -> set[str]:
        if time.monotonic() - self._checked >= NODES_TTL:
            self._alive = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
            self._checked = time.monotonic()
        return self._alive


def connect(address: str, blobs_dir: Path) -> tuple[RayInventory, TransportFactory]:
    """Joins the cluster and takes stock of its devices; the factory makes their transports."""
    ray.init(address=address, namespace=NAMESPACE, log_to_driver=True)
    # Blobs are served from this node's store, where the front end's own node is a Ray node;
    # a front end connected through ray:// is not, and its nodes must share the store's path.
    blobs = None if address.startswith("ray://") else BlobActor.options(
        num_cpus=0, scheduling_strategy=_on_node(ray.get_runtime_context().get_node_id()),
    ).remote(str(blobs_dir))
    inventory = _take_stock([n for n in ray.nodes() if n["Alive"]])
    found = inventory.devices()
    log.info("Ray cluster at %s: %d devices (%s)", address, len(found),
             ", ".join(d.id for d in found) or "none: no node offers a GPU or a CPU to Ray")

    def transport(device: Device, n_threads: int, debug: bool) -> RayTransport:
        # n_threads counts the front end's cores; a worker gets its node's (its Seat).
        return RayTransport(device, inventory, debug, blobs)

    return inventory, transport


def _take_stock(nodes: list[dict[str, Any]]) -> RayInventory:
    """Asks every node that offers Ray a GPU or a CPU what it has. A node's GPUs are its
    devices (at most as many as it offers Ray); a node without GPUs has one CPU device. Devices
    whose worker name is taken belong to another front end."""
    usable = [n for n in nodes if n["Resources"].get("GPU", 0) >= 1
              or n["Resources"].get("CPU", 0) >= 1]
    reports = ray.get([_PROBE.options(num_cpus=0, scheduling_strategy=_on_node(
        n["NodeID"])).remote() for n in usable])
    seats: dict[str, tuple[Device, Seat]] = {}
    hosts: dict[str, Device] = {}
    for node, (gpus, host, cores) in zip(usable, reports):
        node_id, resources = node["NodeID"], node["Resources"]
        where = f"@{node_id[:8]}"
        hosts[node_id] = dataclasses.replace(host, id=f"cpu{where}")
        offered = gpus[:int(resources.get("GPU", 0))]
        threads = max(1, min(cores, int(resources.get("CPU", 0))))
        mine = ([(d, Seat(node_id, 1, threads)) for d in offered] if offered
                else [(host, Seat(node_id, 0, threads))])
        for device, seat in mine:
            # What was free when we joined is the budget our books count down from: the
            # figure is not read again, so loads of our own must not count twice.
            named = Device(f"{device.id}{where}", f"{device.name} on {node['NodeManagerAddress']}",
                           device.free_memory, device.free_memory, device.env)
            if _taken(worker_name(named.id)):
                log.info("%s is served by another front end", named.id)
                continue
            seats[named.id] = (named, seat)
    return RayInventory(seats, hosts)


def _taken(name: str) -> bool:
    try:
        ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return False
    return True


async def _result(ref: ray.ObjectRef) -> Any:
    """Awaits a Ray call; `.future()` works for local and ray:// (client) references alike."""
    return await asyncio.wrap_future(ref.future())


class RayTransport:
    """Protocol messages to and from an `EngineActor`: one send call in flight at a time
    carrying everything queued meanwhile, and one receive call that returns as soon as the
    worker has written something (a step's text, a reply)."""

    def __init__(self, device: Device, inventory: RayInventory, debug: bool,
                 blobs: ray.actor.ActorHandle | None) -> None:
        self._device = device
        self._inventory = inventory
        self._debug = debug
        self._blobs = blobs
        self._actor: ray.actor.ActorHandle | None = None
        self._outbox = bytearray()
        self._queued = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._ended = asyncio.Event()
        self._why = "its worker loop ended"
        self._on_message: OnMessage = lambda msg: None
        self._on_closed: OnClosed = lambda: None

    def open(self, on_message: OnMessage, on_closed: OnClosed) -> None:
        self._on_message, self._on_closed = on_message, on_closed
        seat = self._inventory.seat(self._device)
        resources = {"num_gpus": seat.gpus, "num_cpus": 0} if seat.gpus else {
            "num_cpus": seat.threads}
        actor = WorkerActor.options(name=worker_name(self._device.id), namespace=NAMESPACE,
                                max_restarts=0, scheduling_strategy=_on_node(seat.node_id),
                                **resources)
        try:
            self._actor = actor.remote(self._device.env, seat.threads, self._debug, self._blobs,
                                       CACHE_DIR)
        except ValueError as exc:  # its name is taken: another front end serves this device
            self._inventory.lose(self._device.id)
            raise WorkerDied(str(exc)) from None
        self._spawn(self._receive())
        self._spawn(self._send())

    def send(self, msg: protocol.ToWorker) -> None:
        if self._actor is None or self._ended.is_set():
            return
        if isinstance(msg, protocol.Load):
            self._spawn(self._load(msg))
        else:
            self._queue(msg)

    def _queue(self, msg: protocol.ToWorker) -> None:
        self._outbox += protocol.frame(msg)
        self._queued.set()

    async def _load(self, msg: protocol.Load) -> None:
        """Sends a Load once its files (weights, adapters, projector, draft model) are on the
        worker's node (fetched there if need be)."""
        assert self._actor is not None
        extras = [path for path in (msg.projector, msg.draft) if path]
        try:
            paths = await _result(self._actor.localize.remote([msg.path, *msg.adapters, *extras]))
        except RayActorError:
            return  # the receive loop reports the death
        except RayError as exc:
            cause = exc.cause if isinstance(exc, RayTaskError) else exc
            self._on_message(protocol.LoadFailed(msg.model_id, f"fetching the weights to "
                                                 f"{self._device.id} failed: {cause}"))
            return
        adapters = paths[1:1 + len(msg.adapters)]
        localized = iter(paths[1 + len(msg.adapters):])
        self._queue(dataclasses.replace(
            msg, path=paths[0], adapters=adapters,
            projector=next(localized) if msg.projector else "",
            draft=next(localized) if msg.draft else ""))

    async def _send(self) -> None:
        assert self._actor is not None
        while True:
            await self._queued.wait()
            self._queued.clear()
            frames, self._outbox = bytes(self._outbox), bytearray()
            try:
                await _result(self._actor.send.remote(frames))
            except RayError as exc:
                self._end(exc)
                return

    async def _receive(self) -> None:
        assert self._actor is not None
        reader = protocol.FrameReader()
        while True:
            try:
                data = await _result(self._actor.receive.remote(RECEIVE_WAIT))
            except RayError as exc:
                self._end(exc)
                return
            if data == b"":
                self._end(None)
                return
            for msg in reader.feed(data or b""):
                self._on_message(msg)

    def _end(self, error: RayError | None) -> None:
        if self._ended.is_set():
            return
        if error is not None:
            self._why = str(error).strip().splitlines()[-1].strip()  # Ray's last line: why
        self._ended.set()
        self._inventory.forget_nodes()  # perhaps its node is gone: the next plan should know
        self._on_closed()

    def kill(self) -> None:
        if self._actor is not None:
            ray.kill(self._actor, no_restart=True)  # the pending receive then fails

    def reap(self) -> str:
        for task in self._tasks:
            task.cancel()
        self.kill()  # a worker loop that ended leaves its actor up
        return f"Ray actor {worker_name(self._device.id)}: {self._why}"

    async def stop(self) -> None:
        if self._actor is not None and not self._ended.is_set():
            self._queue(protocol.Shutdown())
            try:
                await asyncio.wait_for(self._ended.wait(), STOP_TIMEOUT)
            except asyncio.TimeoutError:
                pass
        self.reap()

    def _spawn(self, coro) -> None:  # type: ignore[no-untyped-def]
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

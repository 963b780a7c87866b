"""GET /metrics: the server's figures in Prometheus text format.

The counters and histograms come from server/metrics.py; what mirrors the scheduler (running
and queued requests, loaded models, worker restarts, KV cache use, device memory) is read off
it at scrape time (its snapshot), so it can never drift from it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Iterator, Sequence

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from scheduler.devices import Device
from scheduler.snapshot import RunnerState, Snapshot
from server.context import SCHEDULER
from server.metrics import METRICS

# The text format every Prometheus reads (prometheus-client's CONTENT_TYPE_LATEST names 1.0.0 in
# its newer releases).
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"


async def metrics(request: web.Request) -> web.Response:
    scheduler = request.app[SCHEDULER]
    devices = await asyncio.to_thread(scheduler.devices)  # NVML queries: off the event loop
    body = generate_latest(Scrape(request.app[METRICS].registry, scheduler.snapshot(), devices))
    return web.Response(body=body, headers={"Content-Type": TEXT_FORMAT})


@dataclass
class Scrape(Collector):
    """What one scrape reports: the registry's metrics, then the scheduler's state."""

    registry: CollectorRegistry
    snapshot: Snapshot
    devices: list[Device]

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()
        runners = self.snapshot.runners
        yield GaugeMetricFamily("corral_requests_running", "Requests holding a model slot",
                                value=sum(runner.refcount for runner in runners))
        yield GaugeMetricFamily("corral_requests_queued",
                                "Requests waiting for a slot or for their model to load",
                                value=self.snapshot.waiting)
        yield GaugeMetricFamily("corral_models_loaded",
                                "Models loaded on a worker (a model's replicas count once)",
                                value=len({runner.name for runner in runners}))
        yield CounterMetricFamily("corral_worker_restarts",
                                  "Worker processes that died or hung and were replaced",
                                  value=self.snapshot.worker_restarts)
        yield kv_cache_usage(runners)
        yield from device_memory(self.devices)


def kv_cache_usage(runners: Sequence[RunnerState]) -> GaugeMetricFamily:
    """Per model, the share of KV cells in use as the latest engine step reported it (none yet:
    empty), over all of the model's runners."""
    cells: dict[str, tuple[int, int]] = {}
    for runner in runners:
        before = cells.get(runner.name, (0, 0))
        cells[runner.name] = (before[0] + runner.kv_used, before[1] + runner.kv_cells)
    family = GaugeMetricFamily("corral_kv_cache_usage_ratio",
                               "Share of the KV cache's cells in use", labels=["model"])
    for model, (used, total) in cells.items():
        family.add_metric([model], used / total if total else 0.0)
    return family


def device_memory(devices: list[Device]) -> Iterator[GaugeMetricFamily]:
    """Memory of each GPU (all its users, as NVML counts it), or of the CPU's RAM."""
    used = GaugeMetricFamily("corral_device_memory_used_bytes", "Device memory in use",
                             labels=["device"])
    total = GaugeMetricFamily("corral_device_memory_total_bytes", "Device memory in all",
                              labels=["device"])
    for device in devices:
        used.add_metric([device.id], device.total_memory - device.free_memory)
        total.add_metric([device.id], device.total_memory)
    yield used
    yield total

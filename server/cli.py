"""What `corral serve` and `corral bootstrap` run (the command line itself is cli/main.py), and
`python -m server serve|bootstrap`: the same without the client's command line."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Callable, Sequence

import psutil

from server import __version__, threads
from server.settings import Settings, SettingsError, load

if TYPE_CHECKING:
    from scheduler.devices import Inventory

log = logging.getLogger("corral")

# How long running requests may take to finish after SIGTERM/SIGINT before they are cut off.
SHUTDOWN_GRACE = 30.0
THREADS_GRACE = 5.0  # then how long the front end's threads may take to end their work


COMMANDS = {"serve": "serve", "start": "serve", "bootstrap": "bootstrap"}  # start: Ollama's alias


def main(argv: Sequence[str]) -> int:
    """`python -m server COMMAND`."""
    if len(argv) != 1 or argv[0] not in COMMANDS:
        print("usage: python -m server serve|bootstrap", file=sys.stderr)
        return 2
    return run(COMMANDS[argv[0]])


def run(command: str) -> int:
    """`serve` or `bootstrap` with the settings of the environment; 2 when one is invalid."""
    try:
        settings = load()
    except SettingsError as exc:
        print(f"corral: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.DEBUG if settings.debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if command == "bootstrap":
        return bootstrap(settings)
    return serve(settings)


def bootstrap(settings: Settings) -> int:
    from server.bootstrap import ensure_default_model  # noqa: PLC0415
    from store.store import Store  # noqa: PLC0415

    for status in ensure_default_model(Store(settings.models_dir)):
        print(status)
    return 0


def serve(settings: Settings, inventory: Inventory | None = None) -> int:
    """Runs the server until SIGTERM/SIGINT. `inventory`: tests hand in simulated devices."""
    import uvloop  # noqa: PLC0415

    runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    code, threads_ended = runner.run(_serve(settings, inventory))
    if not threads_ended:
        # Interpreter exit would wait for those threads for as long as they hang.
        log.error("front-end threads still busy %gs after stopping: exiting without them",
                  THREADS_GRACE)
        logging.shutdown()
        os._exit(code)
    runner.close()
    return code


async def _serve(settings: Settings, inventory: Inventory | None) -> tuple[int, bool]:
    """The exit code, and whether the front end's threads all ended."""
    from aiohttp import web  # noqa: PLC0415

    from scheduler.devices import SystemInventory  # noqa: PLC0415
    from scheduler.scheduler import Config, Scheduler  # noqa: PLC0415
    from scheduler.worker import WorkerHandle  # noqa: PLC0415
    from server.app import build_app  # noqa: PLC0415
    from server.security import API_KEYS  # noqa: PLC0415
    from server.systemd import notify  # noqa: PLC0415
    from store.store import Store  # noqa: PLC0415

    store = Store(settings.models_dir, prune=not settings.noprune)
    if swept := store.sweep_partials():
        log.info("removed %d files left by unfinished uploads and downloads of an earlier run", swept)
    worker_factory: Callable[..., WorkerHandle] = WorkerHandle
    if settings.ray_address:
        # Only here is ray imported: without CORRAL_RAY_ADDRESS corral runs without it.
        try:
            from scheduler import ray_cluster  # noqa: PLC0415
        except ImportError as exc:
            print(f"corral: CORRAL_RAY_ADDRESS needs the ray extra (pip install 'corral[ray]'): "
                  f"{exc}", file=sys.stderr)
            return 2, True
        inventory, transport = ray_cluster.connect(settings.ray_address, store.blobs_dir)
        worker_factory = functools.partial(WorkerHandle, transport=transport)
    scheduler = Scheduler(inventory or SystemInventory(), Config(
        slots=settings.num_parallel, max_queue=settings.max_queue,
        max_loaded=settings.max_loaded_models, max_replicas=settings.max_replicas,
        keep_alive=settings.keep_alive, spread=settings.sched_spread,
        gpu_overhead=settings.gpu_overhead, hang_timeout=settings.worker_timeout,
        batch_invariant=settings.batch_invariant,
        n_threads=psutil.cpu_count(logical=False) or psutil.cpu_count() or 1,
        flash_attention=settings.flash_attention, kv_cache_type=settings.kv_cache_type,
        load_timeout=settings.load_timeout, speculative=settings.speculative,
        debug=settings.debug), worker_factory)
    try:
        app = build_app(settings, store, scheduler)  # before any worker starts: it reads key files
    except SettingsError as exc:
        print(f"corral: {exc}", file=sys.stderr)
        return 2, True
    await scheduler.start()
    # server/accesslog.py writes the access log; aiohttp's own would be a second line.
    # keepalive_timeout closes a connection that has not sent a whole request head this long
    # after opening or after its last answer (aiohttp's own default is an hour).
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=SHUTDOWN_GRACE,
                           access_log=None, keepalive_timeout=settings.idle_timeout)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        log.error("cannot listen on %s:%s: %s", settings.host, settings.port, exc)
        await runner.cleanup()
        return 1, True
    log.info("corral %s listening on http://%s:%s (models in %s)", __version__, settings.host,
             settings.port, settings.models_dir)
    notify("READY=1")  # port bound, workers up: systemd (Type=notify) may count us started
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, app[API_KEYS].reload)
    await stop.wait()
    log.info("shutting down: finishing running requests")
    notify("STOPPING=1")
    await runner.cleanup()
    log.info("stopped")
    return 0, await threads.finish(THREADS_GRACE)

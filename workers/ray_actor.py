"""One device's worker as a Ray actor on a cluster node.

The actor runs the worker's own step loop (workers.main.serve, the same Engine) on a thread, fed
and drained through a pipe pair, so a worker behaves the same as a local process. The front end
(scheduler/ray_cluster.py) keeps one `send` and one `receive` call in flight at a time (two
threads), which keeps frames in order whatever order Ray runs a threaded actor's calls in;
fetching weights has threads of its own (the "fetch" concurrency group). The actor's death (its
process, or its node) is what Ray reports to the front end's next call.
"""

from __future__ import annotations

import logging
import os
import select
import threading
from pathlib import Path

import ray

from workers.blobs import digest_of, fetch_blob
from workers.main import serve


class EngineActor:
    def __init__(self, device_env: dict[str, str], n_threads: int, debug: bool,
                 blobs: ray.actor.ActorHandle | None, cache_dir: str) -> None:
        # The device's own choice (e.g. CUDA_VISIBLE_DEVICES by UUID) over the one Ray made
        # when it granted the GPU: Ray counts GPUs, corral's inventory names them.
        os.environ.update(device_env)
        logging.basicConfig(level=logging.DEBUG if debug else logging.INFO,
                            format="%(asctime)s %(levelname)s worker[%(process)d] %(message)s")
        self._blobs = blobs
        self._cache = Path(cache_dir).expanduser()
        self._inbox_r, self._inbox_w = os.pipe()
        self._outbox_r, self._outbox_w = os.pipe()
        threading.Thread(target=self._run, args=(n_threads, debug), name="corral-engine",
                         daemon=True).start()

    def _run(self, n_threads: int, debug: bool) -> None:
        try:
            serve(self._inbox_r, self._outbox_w, n_threads, debug)
        finally:
            os.close(self._outbox_w)  # the front end's next receive sees the end

    def send(self, frames: bytes) -> None:
        """Frames for the step loop (it reads them between steps)."""
        view = memoryview(frames)
        while view:
            view = view[os.write(self._inbox_w, view):]

    def receive(self, timeout: float) -> bytes | None:
        """Frame bytes the step loop wrote, waiting up to `timeout` seconds for some: None when
        it wrote nothing meanwhile, b"" once it has ended."""
        if not select.select([self._outbox_r], [], [], timeout)[0]:
            return None
        return os.read(self._outbox_r, 1 << 20)

    @ray.method(concurrency_group="fetch")  # a long fetch must not hold up send and receive
    def localize(self, paths: list[str]) -> list[str]:
        """A Load's files as paths on this node: the front end's own path where this node shares
        it, else a copy fetched once by digest into the node's cache."""
        return [path if os.path.isfile(path) else str(self._fetch(path)) for path in paths]

    def _fetch(self, path: str) -> Path:
        digest = digest_of(path)
        blobs = self._blobs
        if blobs is None:
            raise FileNotFoundError(f"{path} is not on this node, and a front end connected "
                                    "through ray:// serves no blobs: share the store's path")
        return fetch_blob(lambda offset, length: ray.get(blobs.read.remote(digest, offset, length)),
                          digest, self._cache)

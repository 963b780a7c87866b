"""Test only: the real server over a simulated device inventory.

    python -m tests.e2e.simulated_server cpu:4G,cpu:4G

starts `corral serve` (settings from the environment, as always) with two CPU "devices", each with
its own worker, so that replicas can be tested end to end on a machine with one CPU and no GPU.
Production never reads a simulated inventory: `corral serve` uses the devices NVML (or psutil)
reports. The spec's grammar is `scheduler.devices.simulated`'s.
"""

from __future__ import annotations

import logging
import sys

from scheduler.devices import simulated
from server import cli
from server.settings import load


def main(spec: str) -> int:
    settings = load()
    logging.basicConfig(level=logging.DEBUG if settings.debug else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return cli.serve(settings, simulated(spec))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))

"""`corral bootstrap` (the first half of `make serve`) registers gemma3:270m once."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.e2e.server import ROOT


def test_running_bootstrap_again_changes_nothing(store_dir: Path) -> None:
    manifest = store_dir / "manifests/registry.ollama.ai/library/gemma3/270m"
    before = (manifest.read_bytes(), manifest.stat().st_mtime_ns, sorted(os.listdir(store_dir / "blobs")))
    out = subprocess.run([sys.executable, "-m", "server", "bootstrap"], cwd=ROOT, check=True,
                         env={**os.environ, "OLLAMA_MODELS": str(store_dir)},
                         capture_output=True, text=True).stdout.splitlines()
    assert out[-1] == "success"
    assert not any(line.startswith("creating new layer") for line in out)
    after = (manifest.read_bytes(), manifest.stat().st_mtime_ns, sorted(os.listdir(store_dir / "blobs")))
    assert after == before

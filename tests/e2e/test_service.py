"""The systemd unit and what it relies on: a unit systemd accepts, every setting documented in
the environment file, and READY=1 sent only once the server answers."""

from __future__ import annotations

import http.client
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from server.settings import VARIABLES
from tests.e2e.server import ROOT, Server


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_the_unit_file_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    unit = (ROOT / "deploy" / "corral.service").read_text()
    corral = Path(sys.executable).with_name("corral")
    unit = "\n".join(f"ExecStart={corral} serve" if line.startswith("ExecStart=") else line
                     for line in unit.splitlines())
    path = tmp_path / "corral.service"
    path.write_text(unit + "\n")
    result = subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True,
                            text=True)
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_the_environment_file_documents_every_setting() -> None:
    text = (ROOT / "deploy" / "corral.env").read_text()
    for var in VARIABLES:
        assert f"#{var.name}={var.default}\n" in text, var.name


def test_ready_is_notified_only_once_the_server_answers(store_dir: Path, tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(address)
    listener.settimeout(180)
    server = Server(store_dir, env={"NOTIFY_SOCKET": address})
    heard: dict[str, object] = {}

    def on_notify() -> None:
        """Asks the server for / the moment READY=1 arrives."""
        heard["message"] = listener.recv(4096)
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        try:
            conn.request("GET", "/")
            heard["status"] = conn.getresponse().status
        except OSError as exc:
            heard["status"] = exc
        finally:
            conn.close()

    waiter = threading.Thread(target=on_notify)
    waiter.start()
    try:
        server.start()
        waiter.join(60)
        assert heard.get("message") == b"READY=1"
        assert heard.get("status") == 200
    finally:
        listener.close()
        if server.process is not None:
            server.stop()

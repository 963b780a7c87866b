"""/api/create on the real server: quantizing an upload, and what FROM may read."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tests.e2e.server import Server
from tests.gguf_files import tiny_llama_f16


def test_an_uploaded_f16_model_is_quantized_with_streamed_progress(server: Server,
                                                                   tmp_path: Path) -> None:
    data = tiny_llama_f16(tmp_path / "tiny.gguf").read_bytes()
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    assert server.post(f"/api/blobs/{digest}", raw=data).status == 201
    reply = server.post("/api/create", {"model": "tiny:q8", "files": {"tiny.gguf": digest},
                                        "quantize": "q8_0"})
    lines = reply.lines()
    assert reply.status == 200 and lines[-1] == {"status": "success"}
    progress = [line for line in lines if "completed" in line]
    assert progress[0]["status"] == "quantizing F16 model to Q8_0"
    assert progress[-1]["completed"] == progress[-1]["total"]
    show = server.post("/api/show", {"model": "tiny:q8"}).json()
    assert show["details"]["quantization_level"] == "Q8_0"


def test_an_already_quantized_model_cannot_be_quantized(server: Server) -> None:
    reply = server.post("/api/create", {"model": "again", "from": "gemma3:270m",
                                        "quantize": "q4_K_M"})
    assert reply.status == 400 and "F16 and F32" in reply.json()["error"]


def test_from_a_server_path_outside_the_allowed_folders_is_400(server: Server) -> None:
    reply = server.post("/api/create", {"model": "stolen", "from": "/etc/shadow"})
    assert reply.status == 400 and "CORRAL_ALLOWED_IMPORT_DIRS" in reply.json()["error"]


def test_a_shown_from_path_creates_the_same_model(server: Server) -> None:
    blob = server.post("/api/show", {"model": "gemma3:270m"}).json()["modelfile"].split(
        "\nFROM ", 1)[1].splitlines()[0]
    assert server.post("/api/create", {"model": "same", "from": blob, "stream": False}).status == 200
    tags = {m["name"]: m for m in server.get("/api/tags").json()["models"]}
    assert tags["same:latest"]["details"]["quantization_level"] == "Q4_K_M"

"""Models with a projector (mmproj) layer on the real server: created from two uploaded GGUFs or
from a Modelfile with two FROMs, shown with `vision` and `projector_info`, pushed to a real
registry and pulled back with the projector, and a projector llama.cpp cannot read refused."""

from __future__ import annotations

import hashlib
from pathlib import Path

from gguf import GGUFValueType

from store.names import parse_name
from store.store import MODEL_MEDIA, PROJECTOR_MEDIA, Layer, Store
from tests.e2e.conftest import MODEL, QUICK
from tests.e2e.server import Server
from tests.gguf_files import tiny_clip_projector


def _upload(server: Server, path: Path) -> str:
    data = path.read_bytes()
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    assert server.post(f"/api/blobs/{digest}", raw=data).status in (200, 201)
    return digest


def _weights_digest(server: Server) -> str:
    """The demo model's weights blob, already in the store (no 250 MB upload)."""
    blob = server.post("/api/show", {"model": MODEL}).json()["modelfile"].split(
        "\nFROM ", 1)[1].splitlines()[0]
    return Path(blob).name.replace("-", ":", 1)


def _vision_model(server: Server, tmp_path: Path, name: str, seed: int) -> str:
    """A model of the demo weights and a projector of its own (its seed), from two files."""
    projector = _upload(server, tiny_clip_projector(tmp_path / f"mmproj-{seed}.gguf", seed=seed))
    reply = server.post("/api/create", {"model": name, "stream": False, "files": {
        "gemma.gguf": _weights_digest(server), "mmproj.gguf": projector}})
    assert reply.status == 200, reply.body
    return projector


def _layers(store_dir: Path, name: str) -> list[tuple[str, str]]:
    manifest = Store(store_dir).read_manifest(parse_name(name))
    assert manifest is not None
    return [(layer.media_type, layer.digest) for layer in manifest.layers]


def test_two_uploaded_files_make_a_model_with_a_projector(server: Server, tmp_path: Path,
                                                          store_dir: Path) -> None:
    projector = _vision_model(server, tmp_path, "vision:files", seed=11)
    assert _layers(store_dir, "vision:files")[:2] == [(MODEL_MEDIA, _weights_digest(server)),
                                                     (PROJECTOR_MEDIA, projector)]


def test_show_lists_vision_and_the_projector_info(server: Server, tmp_path: Path) -> None:
    _vision_model(server, tmp_path, "vision:show", seed=12)
    shown = server.post("/api/show", {"model": "vision:show"}).json()
    assert "vision" in shown["capabilities"]
    assert shown["projector_info"]["general.architecture"] == "clip"
    assert shown["projector_info"]["clip.vision.projection_dim"] == 640
    assert shown["modelfile"].count("\nFROM ") == 2


def test_a_modelfile_with_two_froms_makes_a_model_with_a_projector(server: Server,
                                                                   tmp_path: Path,
                                                                   store_dir: Path) -> None:
    projector = _upload(server, tiny_clip_projector(tmp_path / "mmproj.gguf", seed=13))
    blobs = store_dir / "blobs"
    weights = blobs / _weights_digest(server).replace(":", "-")
    modelfile = (f"FROM {weights}\nFROM {blobs / projector.replace(':', '-')}\n"
                 "SYSTEM Describe pictures.\n")
    reply = server.post("/api/create", {"model": "vision:mf", "modelfile": modelfile,
                                        "stream": False})
    assert reply.status == 200, reply.body
    assert (PROJECTOR_MEDIA, projector) in _layers(store_dir, "vision:mf")
    assert "vision" in server.post("/api/show", {"model": "vision:mf"}).json()["capabilities"]


def test_push_then_pull_brings_the_projector_back(server: Server, tmp_path: Path,
                                                  store_dir: Path, registry: str) -> None:
    name = f"{registry}/library/vision:test"
    projector = _vision_model(server, tmp_path, name, seed=14)
    layers = _layers(store_dir, name)
    reply = server.post("/api/push", {"model": name, "insecure": True})
    assert reply.status == 200 and reply.lines()[-1] == {"status": "success"}, reply.body
    assert server.request("DELETE", "/api/delete", {"model": name}).status == 200
    assert not Store(store_dir).has_blob(projector)  # gone with its only model
    reply = server.post("/api/pull", {"model": name, "insecure": True})
    assert reply.status == 200 and reply.lines()[-1] == {"status": "success"}, reply.body
    assert _layers(store_dir, name) == layers
    assert Store(store_dir).has_blob(projector)
    assert "projector_info" in server.post("/api/show", {"model": name}).json()


def test_a_projector_of_wrong_metadata_types_is_a_400_and_the_server_goes_on(
        server: Server, tmp_path: Path) -> None:
    bad = _upload(server, tiny_clip_projector(tmp_path / "bad.gguf", retype={
        "clip.vision.image_size": GGUFValueType.INT32}))
    reply = server.post("/api/create", {"model": "vision:bad", "files": {
        "gemma.gguf": _weights_digest(server), "mmproj.gguf": bad}})
    assert reply.status == 400
    assert "clip.vision.image_size is of type i32" in reply.json()["error"]
    assert server.post("/api/show", {"model": "vision:bad"}).status == 404
    answer = server.post("/api/generate", {"model": MODEL, "prompt": "hi", "stream": False,
                                           "options": QUICK})
    assert answer.status == 200 and answer.json()["done"] is True


def test_generating_with_a_stored_projector_of_wrong_types_is_a_400(server: Server,
                                                                    tmp_path: Path,
                                                                    store_dir: Path) -> None:
    """A projector that came in by a pull (or by hand) was never checked at create."""
    bad = _upload(server, tiny_clip_projector(tmp_path / "bad.gguf", retype={
        "clip.has_vision_encoder": GGUFValueType.UINT8}))
    store = Store(store_dir)
    good = store.read_manifest(parse_name(MODEL))
    assert good is not None
    layer = next(lay for lay in good.layers if lay.media_type == MODEL_MEDIA)
    projector = Layer(PROJECTOR_MEDIA, bad, store.blob_path(bad).stat().st_size)
    store.write_manifest(parse_name("vision:pulled"), good.config, [layer, projector])
    try:
        reply = server.post("/api/generate", {"model": "vision:pulled", "prompt": "hi",
                                              "stream": False, "options": QUICK})
        assert reply.status == 400
        assert "clip.has_vision_encoder is of type u8" in reply.json()["error"]
        assert server.get("/api/ready").status == 200
    finally:
        store.delete_manifest(parse_name("vision:pulled"))

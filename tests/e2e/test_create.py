"""/api/create on the real server: quantizing an upload, and what FROM may read."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tests.e2e.server import Server
from tests.gguf_files import gemma_lora, tiny_llama_f16


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


MODELFILE = '''FROM gemma3:270m
# a comment
parameter temperature 0.2
PARAMETER stop "<end_of_turn>"
PARAMETER stop "###"
PARAMETER num_ctx 1024
SYSTEM """You answer in "one" word.
Always."""
TEMPLATE """<start_of_turn>user
{{ if .System }}{{ .System }} {{ end }}{{ .Prompt }}<end_of_turn>
<start_of_turn>model
"""
MESSAGE user Hello
MESSAGE assistant Hi
LICENSE """Some licence \\ with a backslash"""
'''


def _show(server: Server, model: str) -> dict:
    reply = server.post("/api/show", {"model": model})
    assert reply.status == 200, reply.body
    return reply.json()


def test_a_modelfile_creates_a_model_with_every_instruction(server: Server) -> None:
    reply = server.post("/api/create", {"model": "mf:1", "modelfile": MODELFILE, "stream": False})
    assert reply.status == 200, reply.body
    show = _show(server, "mf:1")
    assert show["system"] == 'You answer in "one" word.\nAlways.'
    assert show["template"].startswith("<start_of_turn>user\n{{ if .System }}")
    assert show["messages"] == [{"role": "user", "content": "Hello"},
                                {"role": "assistant", "content": "Hi"}]
    assert show["license"] == "Some licence \\ with a backslash"
    assert 'stop                           "###"' in show["parameters"]
    assert "temperature                    0.2" in show["parameters"]


def test_a_shown_modelfile_creates_an_identical_model(server: Server) -> None:
    server.post("/api/create", {"model": "mf:1", "modelfile": MODELFILE, "stream": False})
    first = _show(server, "mf:1")
    reply = server.post("/api/create", {"model": "mf:copy", "modelfile": first["modelfile"],
                                        "stream": False})
    assert reply.status == 200, reply.body
    again = _show(server, "mf:copy")
    for field in ("template", "system", "parameters", "messages", "license", "capabilities",
                  "model_info"):
        assert again[field] == first[field], field
    # The same weights blob; only the parent differs, as in Ollama (FROM names a file, not a model).
    assert again["modelfile"].split("\nFROM ")[1] == first["modelfile"].split("\nFROM ")[1]
    assert {**again["details"], "parent_model": ""} == {**first["details"], "parent_model": ""}


def test_a_bad_modelfile_is_400_naming_the_line(server: Server) -> None:
    reply = server.post("/api/create", {"model": "bad", "modelfile": "FROM gemma3:270m\n"
                                        "PARAMETER temprature 0.5\n"})
    assert reply.status == 400 and "line 2" in reply.json()["error"]


def test_a_custom_template_renders_the_prompt_exactly(server: Server) -> None:
    without_messages = "\n".join(line for line in MODELFILE.splitlines()
                                  if not line.startswith("MESSAGE"))
    server.post("/api/create", {"model": "tpl:1", "modelfile": without_messages, "stream": False})
    options = {"num_predict": 6, "temperature": 0}
    templated = server.post("/api/generate", {"model": "tpl:1", "prompt": "hi", "stream": False,
                                              "options": options}).json()
    raw_text = ('<start_of_turn>user\nYou answer in "one" word.\nAlways. hi<end_of_turn>\n'
                "<start_of_turn>model\n")
    raw = server.post("/api/generate", {"model": "tpl:1", "prompt": raw_text, "raw": True,
                                        "stream": False, "options": options}).json()
    # The same tokens (a raw reply has no context to compare): as many, answered alike.
    assert templated["prompt_eval_count"] == raw["prompt_eval_count"]
    assert templated["response"] == raw["response"]


def _upload_file(server: Server, path: Path) -> str:
    data = path.read_bytes()
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    assert server.post(f"/api/blobs/{digest}", raw=data).status in (200, 201)
    return digest


def test_a_lora_adapter_changes_what_the_model_says(server: Server, tmp_path: Path) -> None:
    digest = _upload_file(server, gemma_lora(tmp_path / "lora.gguf"))
    reply = server.post("/api/create", {"model": "tuned", "from": "gemma3:270m",
                                        "adapters": {"lora.gguf": digest}, "stream": False})
    assert reply.status == 200, reply.body
    ask = {"prompt": "Name a colour.", "stream": False,
           "options": {"temperature": 0, "num_predict": 12}}
    base = server.post("/api/generate", {"model": "gemma3:270m", **ask}).json()["response"]
    # keep_alive 0: the tuned runner goes away again, so later tests see only the suite's model
    tuned = server.post("/api/generate", {"model": "tuned", "keep_alive": 0,
                                          **ask}).json()["response"]
    assert tuned != base
    assert "ADAPTER " in server.post("/api/show", {"model": "tuned"}).json()["modelfile"]


def test_a_model_file_given_as_adapter_is_400(server: Server, tmp_path: Path) -> None:
    digest = _upload_file(server, tiny_llama_f16(tmp_path / "tiny.gguf"))
    reply = server.post("/api/create", {"model": "nope", "from": "gemma3:270m",
                                        "adapters": {"tiny.gguf": digest}})
    assert reply.status == 400 and "not a LoRA adapter" in reply.json()["error"]

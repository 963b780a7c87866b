"""Every blob a create writes holds the bytes Ollama writes for the same input, so equal models
have equal digests whichever way (JSON fields or a Modelfile, any key order) they were made.

The expected bytes come from Ollama's code and tests, not from corral: where Ollama's own test
names a blob by its digest (server/routes_create_test.go at ollama/ollama fb307609, after
5a173edb "manifests: remove OCI rootfs from the model config"), the literal here hashes to that
digest, which the tests check too. The others are derived from the Go source named beside them:
json.NewEncoder(w).Encode (sorted map keys, `<>&` escaped as \\u003c..., float64 numbers, a final
newline) over the types in types/model/config.go and api/types.go.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from server.schemas import CreateRequest
from store.create import create_model
from store.gojson import config_blob, messages_blob, params_blob
from store.model import resolve
from store.modelfile import format_modelfile
from store.names import parse_name
from store.store import (ADAPTER_MEDIA, CONFIG_MEDIA_TYPE, LICENSE_MEDIA, MESSAGES_MEDIA,
                         MODEL_MEDIA, PARAMS_MEDIA, SYSTEM_MEDIA, TEMPLATE_MEDIA, Manifest, Store)
from tests.gguf_files import gguf, kv_string

# Ollama's createBinFile(t, nil, nil): a GGUF whose only key is general.architecture = "test".
TEST_GGUF = gguf([kv_string("general.architecture", "test")], [])
TEST_ADAPTER = gguf([kv_string("general.architecture", "test"),
                     kv_string("general.type", "adapter")], [])
# The config Ollama writes for it: TestCreateFromBin (and every test there) lists this blob.
TEST_CONFIG = (b'{"model_format":"gguf","model_family":"test","model_families":["test"],'
               b'"model_type":"0","file_type":"unknown","architecture":"amd64","os":"linux"}\n')
TEST_CONFIG_DIGEST = "sha256:99759ad5b91e723db0393d698ffbb448b1b7df5ff6377a108c49254583b1bc8c"


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "models")


@pytest.fixture
def weights(store: Store) -> str:
    """The digest of the uploaded test GGUF, as /api/blobs leaves it."""
    return store.add_blob_bytes(TEST_GGUF, MODEL_MEDIA).digest


async def create(store: Store, body: dict[str, Any]) -> Manifest:
    """The model /api/create makes of `body` (parsed as the server parses it)."""
    statuses = [s async for s in create_model(store, CreateRequest.parse(body).spec)]
    assert statuses[-1] == "success"
    manifest = store.read_manifest(parse_name(body["model"]))
    assert manifest is not None
    return manifest


def digest(manifest: Manifest, media_type: str) -> str:
    layer = manifest.layer(media_type)
    assert layer is not None, media_type
    return layer.digest


def blob(store: Store, manifest: Manifest, media_type: str) -> bytes:
    return store.read_blob(digest(manifest, media_type))


def config(store: Store, manifest: Manifest) -> bytes:
    assert manifest.config.media_type == CONFIG_MEDIA_TYPE
    return store.read_blob(manifest.config.digest)


# ---- Ollama's own create tests, blob for blob ------------------------------------------------


async def test_the_config_of_a_gguf_is_ollamas_without_rootfs(store: Store, weights: str) -> None:
    manifest = await create(store, {"model": "test", "files": {"test.gguf": weights}})
    assert config(store, manifest) == TEST_CONFIG
    assert manifest.config.digest == TEST_CONFIG_DIGEST == sha256(TEST_CONFIG)
    assert [lay.media_type for lay in manifest.layers] == [MODEL_MEDIA]


async def test_parameters_are_written_sorted_and_merged_as_ollama_writes_them(
        store: Store, weights: str) -> None:
    # TestCreateMergeParameters: the request's numbers, a base's parameters under new ones,
    # a list replaced whole, `<` and `>` escaped.
    first = await create(store, {"model": "test", "files": {"test.gguf": weights}, "parameters": {
        "temperature": 1, "top_k": 10, "stop": ["USER:", "ASSISTANT:"]}})
    assert blob(store, first, PARAMS_MEDIA) == (
        b'{"stop":["USER:","ASSISTANT:"],"temperature":1,"top_k":10}\n')
    assert digest(first, PARAMS_MEDIA) == (
        "sha256:1d0ad71299d48c2fb7ae2b98e683643e771f8a5b72be34942af90d97a91c1e37")
    merged = await create(store, {"model": "test2", "from": "test", "parameters": {
        "temperature": 0.6, "top_p": 0.7}})
    assert blob(store, merged, PARAMS_MEDIA) == (
        b'{"stop":["USER:","ASSISTANT:"],"temperature":0.6,"top_k":10,"top_p":0.7}\n')
    assert digest(merged, PARAMS_MEDIA) == (
        "sha256:e29a7b3c47287a2489c895d21fe413c20f859a85d20e749492f52a838e36e1ba")
    replaced = await create(store, {"model": "test2", "from": "test", "parameters": {
        "temperature": 0.6, "top_p": 0.7, "stop": ["<|endoftext|>"]}})
    assert blob(store, replaced, PARAMS_MEDIA) == (
        b'{"stop":["\\u003c|endoftext|\\u003e"],"temperature":0.6,"top_k":10,"top_p":0.7}\n')
    assert digest(replaced, PARAMS_MEDIA) == (
        "sha256:12f58bb75cb3042d69a7e013ab87fb3c3c7088f50ddc62f0c77bd332f0d44d35")


async def test_messages_are_api_messages_in_field_order(store: Store, weights: str) -> None:
    # TestCreateReplacesMessages: both message blobs, by digest.
    first = await create(store, {"model": "test", "files": {"test.gguf": weights}, "messages": [
        {"role": "assistant", "content": "What is my purpose?"},
        {"role": "user", "content": "You run tests."},
        {"role": "assistant", "content": "Oh, my god."}]})
    assert blob(store, first, MESSAGES_MEDIA) == (
        b'[{"role":"assistant","content":"What is my purpose?"},'
        b'{"role":"user","content":"You run tests."},'
        b'{"role":"assistant","content":"Oh, my god."}]\n')
    assert digest(first, MESSAGES_MEDIA) == (
        "sha256:298baeaf6928a60cf666d88d64a1ba606feb43a2865687c39e40652e407bffc4")
    second = await create(store, {"model": "test2", "from": "test", "messages": [
        {"content": "You're a test, Harry.", "role": "assistant"},
        {"content": "I-I'm a what?", "role": "user"},
        {"content": "A test. And a thumping good one at that, I'd wager.", "role": "assistant"}]})
    assert digest(second, MESSAGES_MEDIA) == (
        "sha256:a60ecc9da299ec7ede453f99236e5577fd125e143689b646d9f0ddc9971bf4db")


async def test_texts_are_written_as_they_are(store: Store, weights: str) -> None:
    # TestCreateTemplateSystem, TestCreateRemovesLayers, TestCreateUnsetsSystem, TestCreateLicenses.
    manifest = await create(store, {"model": "test", "files": {"test.gguf": weights},
                                    "template": "{{ .System }} {{ .Prompt }}", "system": "Say bye!",
                                    "license": ["MIT", "Apache-2.0"]})
    assert [(lay.media_type, lay.digest) for lay in manifest.layers[1:]] == [
        (TEMPLATE_MEDIA, "sha256:fe7ac77b725cda2ccad03f88a880ecdfd7a33192d6cae08fce2c0ee1455991ed"),
        (SYSTEM_MEDIA, "sha256:4c5f51faac758fecaff8db42f0b7382891a4d0c0bb885f7b86be88c814a7cc86"),
        (LICENSE_MEDIA, "sha256:e5dcffe836b6ec8a58e492419b550e65fb8cbdc308503979e5dacb33ac7ea3b7"),
        (LICENSE_MEDIA, "sha256:2af71558e438db0b73a20beab92dc278a94e1bbe974c00c1a33e3ab62d53a608")]
    assert manifest.config.digest == TEST_CONFIG_DIGEST


async def test_a_detected_templates_parameters_are_ollamas(store: Store) -> None:
    # TestCreateDetectTemplate "matched": the phi-3 Jinja template's stop strings.
    jinja = ("{{ bos_token }}{% for message in messages %}{{'<|' + message['role'] + '|>' + "
             "'\n' + message['content'] + '<|end|>\n' }}{% endfor %}{% if add_generation_prompt "
             "%}{{ '<|assistant|>\n' }}{% else %}{{ eos_token }}{% endif %}")
    data = gguf([kv_string("general.architecture", "test"),
                 kv_string("tokenizer.chat_template", jinja)], [])
    model = store.add_blob_bytes(data, MODEL_MEDIA)
    manifest = await create(store, {"model": "test", "files": {"test.gguf": model.digest}})
    assert digest(manifest, PARAMS_MEDIA) == (
        "sha256:0d79f567714c62c048378f2107fb332dabee0135d080c302d884317da9433cc5")
    assert manifest.config.digest == TEST_CONFIG_DIGEST


# ---- the JSON API and a Modelfile give the same bytes ------------------------------------------

# (the request's parameters, the same as PARAMETER lines in another order, Ollama's params blob)
PARAMETER_CASES = [
    pytest.param({"top_k": 10, "num_ctx": 4096}, ["num_ctx 4096", "top_k 10"],
                 b'{"num_ctx":4096,"top_k":10}\n', id="ints"),
    # A float without a fraction is written as float64 prints it: no ".0".
    pytest.param({"temperature": 1, "top_p": 1.0}, ["top_p 1", "temperature 1.0"],
                 b'{"temperature":1,"top_p":1}\n', id="whole floats"),
    pytest.param({"top_p": 0.9, "temperature": 0.7, "min_p": 0.05},
                 ["min_p 5e-2", "temperature .7", "top_p 0.90"],
                 b'{"min_p":0.05,"temperature":0.7,"top_p":0.9}\n', id="fractions"),
    # encoding/json writes an exponent below 1e-6, with no leading zero in it.
    pytest.param({"min_p": 1e-7}, ["min_p 0.0000001"], b'{"min_p":1e-7}\n', id="tiny float"),
    pytest.param({"use_mmap": False}, ["use_mmap f"], b'{"use_mmap":false}\n', id="bools"),
    # The map holds a float64 after JSON decoding: a 64-bit seed keeps float64's 17 digits.
    pytest.param({"seed": -(1 << 63)}, [f"seed {-(1 << 63)}"],
                 b'{"seed":-9223372036854776000}\n', id="int64 seed"),
    pytest.param({"stop": ["<|im_end|>", "</s>"], "num_predict": 7},
                 ["num_predict 7", "stop <|im_end|>", "stop </s>"],
                 b'{"num_predict":7,"stop":["\\u003c|im_end|\\u003e","\\u003c/s\\u003e"]}\n',
                 id="stop list"),
    # One PARAMETER stop is a list of one (parser.CreateRequest appends FormatParams' []string).
    pytest.param({"stop": ["a&b"]}, ["stop a&b"], b'{"stop":["a\\u0026b"]}\n', id="single stop"),
]


@pytest.mark.parametrize("parameters, lines, expected", PARAMETER_CASES)
async def test_the_api_and_a_modelfile_write_the_same_params_blob(
        store: Store, weights: str, parameters: dict[str, Any], lines: list[str],
        expected: bytes) -> None:
    await create(store, {"model": "base", "files": {"test.gguf": weights}})
    from_api = await create(store, {"model": "api", "from": "base", "parameters": parameters})
    modelfile = "FROM base\n" + "".join(f"PARAMETER {line}\n" for line in lines)
    from_modelfile = await create(store, {"model": "mf", "modelfile": modelfile})
    assert blob(store, from_api, PARAMS_MEDIA) == expected
    assert blob(store, from_modelfile, PARAMS_MEDIA) == expected
    assert params_blob(dict(reversed(list(parameters.items())))) == expected


async def test_a_single_stop_string_in_the_api_is_stored_as_a_list(store: Store,
                                                                   weights: str) -> None:
    # Ollama would store the bare string, which its own loader then refuses (Options.FromMap
    # wants an array); corral stores what the Modelfile `PARAMETER stop x` gives.
    manifest = await create(store, {"model": "m", "files": {"test.gguf": weights},
                                    "parameters": {"stop": "x"}})
    assert blob(store, manifest, PARAMS_MEDIA) == b'{"stop":["x"]}\n'


async def test_a_modelfile_float_is_the_float32_ollamas_parser_makes_of_it(store: Store,
                                                                          weights: str) -> None:
    # api.FormatParams: strconv.ParseFloat(s, 32), stored as float32(...), sent as the
    # shortest text of that float32. The JSON API keeps a float64.
    await create(store, {"model": "base", "files": {"test.gguf": weights}})
    manifest = await create(store, {"model": "mf", "modelfile":
                                    "FROM base\nPARAMETER temperature 0.123456789\n"})
    assert blob(store, manifest, PARAMS_MEDIA) == b'{"temperature":0.12345679}\n'
    manifest = await create(store, {"model": "api", "from": "base",
                                    "parameters": {"temperature": 0.123456789}})
    assert blob(store, manifest, PARAMS_MEDIA) == b'{"temperature":0.123456789}\n'


# ---- the config ------------------------------------------------------------------------------


async def test_requires_is_in_the_config_between_the_types_and_the_platform(store: Store,
                                                                            weights: str) -> None:
    # ConfigV2's declaration order, `requires` omitempty (types/model/config.go).
    manifest = await create(store, {"model": "r", "modelfile":
                                    f"FROM {store.blob_path(weights)}\nREQUIRES v0.14.0\n"})
    assert config(store, manifest) == (
        b'{"model_format":"gguf","model_family":"test","model_families":["test"],'
        b'"model_type":"0","file_type":"unknown","requires":"0.14.0","architecture":"amd64",'
        b'"os":"linux"}\n')


async def test_a_model_from_another_takes_only_what_ollama_inherits(store: Store,
                                                                    weights: str) -> None:
    # CreateHandler reads renderer, parser, requires, model_format and capabilities from the
    # base's config; the rest comes from the weights. `parent_model` is corral's (Ollama puts
    # the parent in the manifest layers' `from`), the one field after ConfigV2's.
    base_config = store.add_blob_bytes(
        b'{"model_format":"gguf","model_family":"old","model_families":["old"],'
        b'"model_type":"7B","file_type":"Q4_0","renderer":"r1","parser":"p1",'
        b'"capabilities":["vision"],"context_length":8192,"architecture":"amd64","os":"linux",'
        b'"rootfs":{"type":"layers","diff_ids":[]}}', CONFIG_MEDIA_TYPE)
    model = store.add_blob_bytes(TEST_GGUF, MODEL_MEDIA)
    store.write_manifest(parse_name("pulled"), base_config, [model])
    manifest = await create(store, {"model": "child", "from": "pulled"})
    assert config(store, manifest) == (
        b'{"model_format":"gguf","model_family":"test","model_families":["test"],'
        b'"model_type":"0","file_type":"unknown","renderer":"r1","parser":"p1",'
        b'"capabilities":["vision"],"architecture":"amd64","os":"linux",'
        b'"parent_model":"pulled:latest"}\n')


def test_a_config_field_ollama_does_not_have_is_refused() -> None:
    with pytest.raises(ValueError, match="rootfs"):
        config_blob({"model_format": "gguf", "rootfs": {}})


def test_an_empty_config_has_gos_zero_values() -> None:
    # A nil []string is null; omitempty fields are left out.
    assert config_blob({}) == (b'{"model_format":"","model_family":"","model_families":null,'
                               b'"model_type":"","file_type":"","architecture":"","os":""}\n')


# ---- messages and adapters -------------------------------------------------------------------


def test_tool_calls_keep_their_argument_order_and_leave_out_empty_fields() -> None:
    # api.Message, api.ToolCall (id omitempty), api.ToolCallFunction (index always) and
    # ToolCallFunctionArguments, which marshals its keys in insertion order (nested maps sorted).
    messages = [{"role": "user", "content": "Weather in <Paris>?"},
                {"role": "assistant", "content": "", "thinking": "use the tool",
                 "tool_calls": [{"function": {"name": "get_weather", "arguments": {
                     "unit": "c", "city": "Paris", "where": {"lon": 2, "lat": 48}}}}]},
                {"role": "tool", "content": "20", "tool_name": "get_weather"}]
    assert messages_blob(messages) == (
        b'[{"role":"user","content":"Weather in \\u003cParis\\u003e?"},'
        b'{"role":"assistant","content":"","thinking":"use the tool","tool_calls":[{"function":'
        b'{"index":0,"name":"get_weather","arguments":{"unit":"c","city":"Paris",'
        b'"where":{"lat":48,"lon":2}}}}]},'
        b'{"role":"tool","content":"20","tool_name":"get_weather"}]\n')


async def test_layers_come_in_the_order_ollamas_create_appends_them(store: Store,
                                                                    weights: str) -> None:
    # createModel: the weights and adapters (convertModelFromFiles), then setTemplate,
    # setSystem, setLicense, setParameters, setMessages. An adapter layer is the uploaded
    # GGUF as it is.
    adapter = store.add_blob_bytes(TEST_ADAPTER, ADAPTER_MEDIA)
    manifest = await create(store, {
        "model": "m", "files": {"test.gguf": weights}, "adapters": {"lora.gguf": adapter.digest},
        "messages": [{"role": "user", "content": "hi"}], "parameters": {"top_k": 1},
        "license": "MIT", "system": "s", "template": "{{ .Prompt }}"})
    assert [lay.media_type for lay in manifest.layers] == [
        MODEL_MEDIA, ADAPTER_MEDIA, TEMPLATE_MEDIA, SYSTEM_MEDIA, LICENSE_MEDIA, PARAMS_MEDIA,
        MESSAGES_MEDIA]
    assert manifest.layers[1] == adapter
    assert manifest.config.digest == TEST_CONFIG_DIGEST


async def test_a_detected_template_stays_with_the_weights_before_the_adapters(store: Store) -> None:
    # detectChatTemplate appends to the weights' layers; the adapters come after them.
    data = gguf([kv_string("general.architecture", "test"),
                 kv_string("tokenizer.chat_template", "{% for m in messages %}<|im_start|>"
                           "{{ m['role'] }}{% endfor %}")], [])
    model = store.add_blob_bytes(data, MODEL_MEDIA)
    adapter = store.add_blob_bytes(TEST_ADAPTER, ADAPTER_MEDIA)
    manifest = await create(store, {"model": "m", "files": {"test.gguf": model.digest},
                                    "adapters": {"lora.gguf": adapter.digest}})
    assert [lay.media_type for lay in manifest.layers] == [
        MODEL_MEDIA, TEMPLATE_MEDIA, ADAPTER_MEDIA, PARAMS_MEDIA]


async def test_a_base_models_parameters_are_rewritten_after_the_new_texts(store: Store,
                                                                          weights: str) -> None:
    # setParameters removes the base's params layer and appends the merged one.
    await create(store, {"model": "base", "files": {"test.gguf": weights},
                         "parameters": {"top_k": 1}})
    manifest = await create(store, {"model": "child", "from": "base", "system": "s"})
    assert [lay.media_type for lay in manifest.layers] == [MODEL_MEDIA, SYSTEM_MEDIA,
                                                          PARAMS_MEDIA]
    assert blob(store, manifest, PARAMS_MEDIA) == b'{"top_k":1}\n'


# ---- equal models, equal manifests -----------------------------------------------------------


async def test_create_then_show_then_create_gives_the_same_manifest(store: Store,
                                                                    weights: str) -> None:
    first = await create(store, {
        "model": "first", "files": {"test.gguf": weights}, "template": "{{ .Prompt }}",
        "system": "Be <brief> & kind.", "license": ["MIT"],
        "parameters": {"temperature": 0.7, "stop": ["<|im_end|>", "</s>"], "num_predict": 7,
                       "num_ctx": 4096, "use_mmap": True},
        "messages": [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi"}]})
    spec = resolve(store, "first")
    # What /api/show prints (server/api/models.py)
    shown = format_modelfile(str(spec.model_path), name=spec.name.display, template=spec.template,
                             system=spec.system, parameters=spec.params, messages=spec.messages,
                             licenses=spec.licenses, adapters=[str(p) for p in spec.adapter_paths])
    again = await create(store, {"model": "again", "modelfile": shown})
    assert again.digest == first.digest
    assert again.layers == first.layers and again.config == first.config


async def test_the_same_model_from_fields_or_a_modelfile_has_the_same_manifest(
        store: Store, weights: str) -> None:
    from_api = await create(store, {"model": "api", "files": {"test.gguf": weights},
                                    "parameters": {"num_predict": 7, "stop": ["<|im_end|>"]},
                                    "system": "s"})
    from_modelfile = await create(store, {"model": "mf", "modelfile": (
        f"FROM {store.blob_path(weights)}\nPARAMETER stop <|im_end|>\nSYSTEM s\n"
        "PARAMETER num_predict 7\n")})
    assert from_modelfile.digest == from_api.digest

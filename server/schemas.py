"""Request bodies, parsed and validated into typed objects before anything else happens.

Every check raises `errors.BadRequest` with a message naming the field, so a handler never sees
a half-valid request and the client always learns what to fix.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Callable, Collection, TypeVar

import orjson
from aiohttp import web

from server import errors, threads
from server.bodies import read_body
from server.durations import parse_duration
from store.create import CreateSpec
from store.modelfile import parse as parse_modelfile
from store.modelfile import parse_requires
from store.modelfile import to_create_spec
from workers import options
from workers.images import ImageError, check_image
from workers.logprobs import MAX_TOP_LOGPROBS
from workers.template.render import TemplateError, check_go_template
from workers.protocol import ChatMessage, OutputFormat

# Bodies up to this size are parsed on the event loop (microseconds); larger ones on the parsing
# threads (a 64 MB chat takes seconds to decode and check).
INLINE_BODY_BYTES = 256 << 10
T = TypeVar("T")


async def read_request(request: web.Request, parse: Callable[[dict[str, Any]], T]) -> T:
    """The body decoded as a JSON object and turned into a request by `parse` (which raises
    BadRequest naming what is wrong), off the event loop when the body is large."""
    body = await read_body(request)
    if len(body) <= INLINE_BODY_BYTES:
        return _decoded(body, parse)
    return await threads.parse(_decoded, body, parse)


async def read_json(request: web.Request) -> dict[str, Any]:
    return await read_request(request, lambda data: data)


def _decoded(body: bytes, parse: Callable[[dict[str, Any]], T]) -> T:
    if not body.strip():
        raise errors.BadRequest("missing request body")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise errors.BadRequest(f"invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise errors.BadRequest("request body must be a JSON object")
    return parse(data)


_KIND_NAMES = {str: "a string", bool: "a boolean", list: "a list", dict: "an object",
               int: "an integer"}


def _typed(body: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any) -> Any:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        want = _KIND_NAMES.get(kind, "valid") if isinstance(kind, type) else "valid"
        raise errors.BadRequest(f'"{key}" must be {want}')
    return value


def refuse_unknown(value: dict[str, Any], known: Collection[str], where: str = "") -> None:
    """400 naming the first field corral does not read: a client that sends a field expects its
    effect (Ollama drops unknown fields silently). A null field is as good as an absent one
    (clients write out their unset options)."""
    for key, item in value.items():
        if key not in known and item is not None:
            raise errors.BadRequest(f'"{where}{key}" is not supported')


# The fields of Ollama's requests (api/types.go, 0.33) corral reads, by route; "name" is the
# older spelling of "model". Ollama's `_debug_render_only` is not among them: it is refused.
_INFERENCE_FIELDS = frozenset({"model", "name", "stream", "options", "keep_alive", "format",
                               "think", "logprobs", "top_logprobs", "truncate", "shift"})
GENERATE_FIELDS = _INFERENCE_FIELDS | {"prompt", "suffix", "system", "template", "context", "raw",
                                       "images"}
CHAT_FIELDS = _INFERENCE_FIELDS | {"messages", "tools"}
MESSAGE_FIELDS = frozenset({"role", "content", "thinking", "images", "tool_calls", "tool_name",
                            "tool_call_id"})
EMBED_FIELDS = frozenset({"model", "name", "input", "keep_alive", "truncate", "dimensions",
                          "options"})
EMBEDDINGS_FIELDS = frozenset({"model", "name", "prompt", "keep_alive", "options"})
# Not read: `renderer` and `parser` (Ollama's Go-coded prompt formats, which no model here can
# hold, as the Modelfile's RENDERER and PARSER), `remote_host` and `info` (cloud models).
# `modelfile` is the older API's; `quantization` the older spelling of `quantize`.
CREATE_FIELDS = frozenset({"model", "name", "stream", "modelfile", "quantize", "quantization",
                           "draft_quantize", "from", "files", "draft_files", "adapters",
                           "template", "license", "system", "parameters", "messages",
                           "requires"})


def only(known: Collection[str],
         parse: Callable[[dict[str, Any]], T]) -> Callable[[dict[str, Any]], T]:
    """`parse`, then the check that a native request holds only `known` fields (and, for a
    chat, its messages only Ollama's message fields): what the request does say is checked
    first, so a missing model is still "model is required"."""
    def checked(body: dict[str, Any]) -> T:
        parsed = parse(body)
        refuse_unknown(body, known)
        for i, message in enumerate(body.get("messages") or [] if "messages" in known else []):
            refuse_unknown(message, MESSAGE_FIELDS, f"messages[{i}].")
        return parsed
    return checked


def _keep_alive(body: dict[str, Any]) -> float | None:
    if body.get("keep_alive") is None:
        return None
    try:
        return parse_duration(body["keep_alive"])
    except ValueError as exc:
        raise errors.BadRequest(f'invalid "keep_alive": {exc}') from None


MAX_TEMPLATE_CHARS = 64 << 10  # Ollama's own templates are a few KB; parsing grows faster


def _template(body: dict[str, Any], default: str | None) -> str | None:
    """A template of a sane size; whether it parses is checked off the event loop
    (`check_template`), since parsing a large one takes seconds."""
    template = _typed(body, "template", str, default)
    _limit_template(template)
    return template


def _limit_template(template: str | None) -> None:
    if template and len(template) > MAX_TEMPLATE_CHARS:
        raise errors.BadRequest(f"template is longer than {MAX_TEMPLATE_CHARS >> 10} KiB")


async def check_template(template: str | None) -> None:
    """400 with the parser's message unless the Go template parses."""
    if template:
        try:
            await threads.parse(check_go_template, template)
        except TemplateError as exc:
            raise errors.BadRequest(str(exc)) from None


def _options(body: dict[str, Any]) -> dict[str, Any]:
    try:
        return options.validate(body.get("options"))
    except options.InvalidOption as exc:
        raise errors.BadRequest(str(exc)) from None


def unknown_without_model(parse: Callable[[dict[str, Any]], T]) -> Callable[[dict[str, Any]], T]:
    """`parse`, for a route where Ollama takes a missing model for an unknown one: its generate
    and embed handlers answer 404 "model '' not found" (chat and the rest: "model is
    required")."""
    def checked(body: dict[str, Any]) -> T:
        if not (body.get("model") or body.get("name")):
            raise errors.NotFound("model '' not found")
        return parse(body)
    return checked


def _model(body: dict[str, Any]) -> str:
    model = body.get("model") or body.get("name")  # "name" is the older spelling
    if not isinstance(model, str) or not model:
        raise errors.BadRequest("model is required")
    return model


def _inference_fields(body: dict[str, Any]) -> dict[str, Any]:
    """What generate and chat requests share: model, stream, options, keep_alive."""
    return {"model": _model(body), "stream": _typed(body, "stream", bool, True),
            "options": _options(body), "keep_alive": _keep_alive(body),
            "format": _output_format(body), "think": _think(body),
            "logprobs": _logprobs(body), "truncate": _typed(body, "truncate", bool, True),
            "shift": _typed(body, "shift", bool, True)}


def _logprobs(body: dict[str, Any]) -> int:
    """-1 without `logprobs`; else how many of the most likely tokens each token comes with."""
    top = _typed(body, "top_logprobs", int, 0)
    if not 0 <= top <= MAX_TOP_LOGPROBS:
        raise errors.BadRequest(f"top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}")
    return top if _typed(body, "logprobs", bool, False) else -1


def _output_format(body: dict[str, Any]) -> OutputFormat:
    """`"json"`, a JSON schema (an object), or nothing; the worker turns it into a grammar."""
    value = body.get("format")
    if value in (None, ""):
        return None
    if value == "json" or isinstance(value, dict):
        return value
    raise errors.BadRequest('invalid format: expected "json" or a JSON schema object')


def parse_images(value: Any, where: str) -> list[str]:
    """`images`: base64 image files (PNG, JPEG, WebP or GIF), each checked by its header; they
    travel on in base64 (the worker's pipe carries JSON)."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise errors.BadRequest(f'"{where}" must be a list of base64-encoded images')
    for i, text in enumerate(value):
        _check_image(text, f"{where}[{i}]")
    return value


def _check_image(text: str, where: str) -> None:
    """400 naming `where` unless `text` is the base64 of a usable image file."""
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise errors.BadRequest(f"{where}: illegal base64 data") from None
    try:
        check_image(data)
    except ImageError as exc:
        raise errors.BadRequest(f"{where}: {exc}") from None


THINK_LEVELS = ("high", "medium", "low", "max")
_THINK_VALUES = '"high", "medium", "low", "max", true, or false'


def _think(body: dict[str, Any]) -> bool | str | None:
    """`think`: true/false, or a level; None when the request does not say (Ollama's words)."""
    value = body.get("think")
    if value is None or isinstance(value, bool) or value in THINK_LEVELS:
        return value
    if isinstance(value, str):
        raise errors.BadRequest(f'invalid think value: "{value}" (must be {_THINK_VALUES})')
    raise errors.BadRequest(f"think must be a boolean or string ({_THINK_VALUES})")


def _tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    """`tools`: function definitions as Ollama and OpenAI write them."""
    tools = _typed(body, "tools", list, [])
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str) \
                or not function["name"]:
            raise errors.BadRequest(f"tools[{i}] must be an object with function.name")
    return tools


@dataclass
class InferenceRequest:
    """Fields that generate and chat requests share."""

    model: str
    stream: bool
    options: dict[str, Any]
    keep_alive: float | None
    format: OutputFormat
    think: bool | str | None
    logprobs: int  # -1: none; else each token's logprob and this many of the top ones
    truncate: bool  # cut a prompt longer than the context (else 400)
    shift: bool  # shift a full context while generating (else stop there)


@dataclass
class GenerateRequest(InferenceRequest):
    prompt: str
    system: str
    template: str
    raw: bool
    context: list[int]
    suffix: str
    images: list[str]  # base64

    @classmethod
    def parse(cls, body: dict[str, Any]) -> "GenerateRequest":
        common = _inference_fields(body)
        context = _typed(body, "context", list, [])
        if not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in context):
            raise errors.BadRequest('"context" must be a list of token ids')
        return cls(prompt=_typed(body, "prompt", str, ""), system=_typed(body, "system", str, ""),
                   template=_template(body, ""), raw=_typed(body, "raw", bool, False),
                   context=context, suffix=_typed(body, "suffix", str, ""),
                   images=parse_images(body.get("images"), "images"), **common)


@dataclass
class ChatRequest(InferenceRequest):
    messages: list[ChatMessage]
    tools: list[dict[str, Any]]

    @classmethod
    def parse(cls, body: dict[str, Any]) -> "ChatRequest":
        return cls(messages=parse_messages(_typed(body, "messages", list, [])),
                   tools=_tools(body), **_inference_fields(body))


def parse_messages(raw: list[Any]) -> list[ChatMessage]:
    messages: list[ChatMessage] = []
    for i, msg in enumerate(raw):
        if not isinstance(msg, dict):
            raise errors.BadRequest(f"messages[{i}] must be an object")
        role, content = msg.get("role"), msg.get("content", "")
        if not isinstance(role, str):
            raise errors.BadRequest(f"messages[{i}].role must be a string")
        # As Ollama's Message.UnmarshalJSON: lowercased ("User" is "user"), and any role goes to
        # the template (Llama 3.1's "ipython", a client's own).
        role = role.lower()
        if content is None:
            content = ""
        if not isinstance(content, str):
            raise errors.BadRequest(f"messages[{i}].content must be a string")
        message: ChatMessage = {"role": role, "content": content}
        images = parse_images(msg.get("images"), f"messages[{i}].images")
        if images:
            message["images"] = images
        for key, kind in (("thinking", str), ("tool_name", str), ("tool_call_id", str),
                          ("tool_calls", list)):
            value = msg.get(key)
            if value in (None, "", []):
                continue
            if not isinstance(value, kind):
                raise errors.BadRequest(f"messages[{i}].{key} must be {_KIND_NAMES[kind]}")
            message[key] = value  # type: ignore[literal-required]
        for j, call in enumerate(message.get("tool_calls", [])):
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict) or not isinstance(function.get("name"), str):
                raise errors.BadRequest(f"messages[{i}].tool_calls[{j}] must have function.name")
        messages.append(message)
    return messages


# OpenAI's limit per embeddings request (clients batch to it); larger batches are split by them.
MAX_EMBED_INPUTS = 2048


def _token_ids(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value)


@dataclass
class EmbedRequest:
    model: str
    inputs: list[str | list[int]]  # texts, or token ids (as OpenAI clients may send)
    truncate: bool
    dimensions: int
    options: dict[str, Any]
    keep_alive: float | None

    @classmethod
    def parse(cls, body: dict[str, Any], token_ids: bool = False) -> "EmbedRequest":
        """`token_ids`: inputs may also be token id lists (OpenAI's API; Ollama's takes text)."""
        raw = body.get("input")

        def one(value: Any) -> bool:
            return isinstance(value, str) or (token_ids and _token_ids(value))

        inputs: list[str | list[int]]
        # As Ollama's EmbedHandler, "" is no input (the model loads, no vectors come back);
        # OpenAI's embeddings embed the empty string.
        if raw is None or raw == [] or (raw == "" and not token_ids):
            inputs = []
        elif one(raw):
            inputs = [raw]
        elif isinstance(raw, list) and all(one(s) for s in raw):
            inputs = list(raw)
        else:
            kinds = "a string, a list of strings, or token ids" if token_ids else \
                "a string or a list of strings"
            raise errors.BadRequest(f'"input" must be {kinds}')
        if len(inputs) > MAX_EMBED_INPUTS:
            raise errors.BadRequest(f'"input" holds {len(inputs)} items; at most '
                                    f"{MAX_EMBED_INPUTS} per request")
        # As Ollama: a vector is cut only to a positive count.
        dimensions = max(0, _typed(body, "dimensions", int, 0))
        return cls(model=_model(body), inputs=inputs, truncate=_typed(body, "truncate", bool, True),
                   dimensions=dimensions, options=_options(body), keep_alive=_keep_alive(body))


def _requires(body: dict[str, Any]) -> str:
    text = _typed(body, "requires", str, "")
    try:
        return parse_requires(text) if text else ""
    except ValueError as exc:
        raise errors.BadRequest(str(exc)) from None


def _blob_map(body: dict[str, Any], key: str) -> dict[str, str]:
    """`files`, `adapters` and `draft_files`: file names mapped to the digests of uploaded
    blobs."""
    mapping = _typed(body, key, dict, {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items()):
        raise errors.BadRequest(f'"{key}" must map file names to digests')
    return mapping


def _refuse_draft_quantize(body: dict[str, Any]) -> None:
    """Ollama quantizes an F16 draft at create (`draft_quantize`); corral does not yet: a 400
    rather than a draft silently left unquantized."""
    if _typed(body, "draft_quantize", str, ""):
        raise errors.BadRequest("draft_quantize is not supported: quantize the draft model "
                                "first and create with the quantized GGUF")


@dataclass
class CreateRequest:
    spec: CreateSpec
    stream: bool

    @classmethod
    def parse(cls, body: dict[str, Any]) -> "CreateRequest":
        model = _model(body)
        # An empty field is an absent one (Go's omitempty), so a client that writes out every
        # field is not refused for "renderer": "".
        refuse_unknown({k: v for k, v in body.items() if v not in ("", {}, [])}, CREATE_FIELDS)
        stream = _typed(body, "stream", bool, True)
        quantize = _typed(body, "quantize", str, "") or _typed(body, "quantization", str, "")
        modelfile = _typed(body, "modelfile", str, "")
        if modelfile:  # the older API: the whole Modelfile in one field
            spec = to_create_spec(parse_modelfile(modelfile), model)
            _limit_template(spec.template)
            spec.quantize = quantize
            _refuse_draft_quantize(body)
            return cls(spec=spec, stream=stream)
        _refuse_draft_quantize(body)
        files, adapters = _blob_map(body, "files"), _blob_map(body, "adapters")
        licenses = body.get("license")
        if isinstance(licenses, str):
            licenses = [licenses]
        if licenses is not None and not (isinstance(licenses, list)
                                         and all(isinstance(s, str) for s in licenses)):
            raise errors.BadRequest('"license" must be a string or a list of strings')
        try:
            parameters = options.validate(body.get("parameters"), "parameter")
        except options.InvalidOption as exc:
            raise errors.BadRequest(str(exc)) from None
        raw_messages = body.get("messages")
        spec = CreateSpec(
            model=model,
            from_=_typed(body, "from", str, ""),
            files=files,
            template=_template(body, None),
            system=_typed(body, "system", str, None),
            parameters=parameters,
            licenses=licenses or [],
            quantize=quantize,
            adapters=adapters,
            draft_files=_blob_map(body, "draft_files"),
            requires=_requires(body),
            messages=None if raw_messages is None else [
                dict(m) for m in parse_messages(_typed(body, "messages", list, []))],
        )
        return cls(spec=spec, stream=stream)

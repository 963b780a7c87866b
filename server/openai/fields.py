"""The request fields each /v1 endpoint reads, and those the OpenAI SDKs send that it accepts
without effect (each with why, where Ollama accepts them too); any other field is a 400 naming
it (server.schemas.refuse_unknown), never silently ignored."""

from __future__ import annotations

from typing import Any

from server.schemas import refuse_unknown

NO_EFFECT: dict[str, str] = {
    "user": "an end-user id for OpenAI's abuse monitoring; nothing here monitors",
    "safety_identifier": "the same id under its newer name",
    "metadata": "tags of stored completions; nothing is stored",
    "store": "nothing is stored: every request stands alone, as on Ollama",
    "service_tier": "one tier: every request is served alike",
    "prompt_cache_key": "prompt prefixes are reused by themselves (workers/slots.py)",
    "parallel_tool_calls": "the model writes one call or several as it will; a forced call "
                           "(tool_choice) is one",
}
_SAMPLING = {"model", "stream", "stream_options", "max_tokens", "seed", "stop", "temperature",
             "top_p", "frequency_penalty", "presence_penalty", "response_format", "n"}
CHAT = frozenset(_SAMPLING | {"messages", "max_completion_tokens", "tools", "tool_choice",
                              "reasoning", "reasoning_effort", "logprobs", "top_logprobs"})
COMPLETIONS = frozenset(_SAMPLING | {"prompt", "suffix", "echo", "logprobs"})
EMBEDDINGS = frozenset({"model", "input", "dimensions", "encoding_format"})
# A chat message's fields (Ollama's openai.Message), and those of an answer that clients send back
# with it in the history (the SDKs' message objects, dumped whole), which change nothing.
MESSAGE = frozenset({"role", "content", "name", "tool_calls", "tool_call_id", "reasoning"})
MESSAGE_NO_EFFECT: dict[str, str] = {
    "refusal": "an answer's refusal text, sent back with it; its content is what the model reads",
    "annotations": "an answer's URL citations, sent back with it",
    "audio": "an answer's audio, sent back with it; no model here speaks",
    "function_call": "the deprecated single call, null in answers since tool_calls replaced it",
}


def check(body: dict[str, Any], known: frozenset[str]) -> None:
    """400 naming the first field of `body` neither read nor accepted without effect."""
    refuse_unknown(body, known | NO_EFFECT.keys())


def check_message(message: dict[str, Any], index: int) -> None:
    refuse_unknown(message, MESSAGE | MESSAGE_NO_EFFECT.keys(), f"messages[{index}].")

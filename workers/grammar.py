"""Structured output: `format` ("json" or a JSON schema) as a llama.cpp grammar per sequence.

The JSON-schema converter is llama-cpp-python's port of llama.cpp's; it ignores integer bounds,
so `minimum`/`maximum` (and the exclusive forms) are added here as a digit-range grammar, and an
answer then validates against the schema, not only parses.
"""

from __future__ import annotations

import ctypes
import math
from typing import Any

import llama_cpp as llama
import numpy as np
import orjson
from llama_cpp.llama_grammar import JSON_GBNF, RESERVED_NAMES, SchemaConverter

from workers.protocol import OutputFormat

# llama_token_data as numpy sees it, so a candidate array for 262k tokens is one vector copy.
_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)], align=True)
MAX_GRAMMAR_CHARS = 1 << 20  # a schema that expands past this is refused, not compiled


def grammar_text(output_format: OutputFormat) -> str:
    """GBNF for `format`: any JSON value for "json", else the JSON schema's grammar. Runs on the
    prompt thread (a hostile schema can expand a lot: e.g. minItems of a million)."""
    if output_format == "json":
        return JSON_GBNF
    try:
        text = _schema_grammar(output_format)  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001 - the converter raises many kinds on bad schemas
        raise ValueError(f"invalid JSON schema in format: {exc}") from None
    if len(text) > MAX_GRAMMAR_CHARS:
        raise ValueError("the JSON schema in format is too complex")
    return text


class Grammar:
    """A grammar kept outside the sampler chain, as llama.cpp's common/sampling.cpp keeps it:
    the chain samples as usual and the grammar only checks that one token; only when it is
    refused is the grammar applied to every candidate and the chain run again. Prompt tokens
    never reach it, and constrained and free sequences share one batch."""

    def __init__(self, vocab: llama.llama_vocab_p, gbnf: str, n_vocab: int) -> None:
        self._sampler = llama.llama_sampler_init_grammar(vocab, gbnf.encode(), b"root")
        if not self._sampler:
            raise ValueError("the format could not be compiled into a grammar")
        self._ids = np.arange(n_vocab, dtype=np.int32)

    def sample(self, chain: llama.llama_sampler_p, ctx: llama.llama_context_p, index: int) -> int:
        logits = np.ctypeslib.as_array(llama.llama_get_logits_ith(ctx, index),
                                       shape=(len(self._ids),))
        token = self._apply(logits, chain)
        if not self._allows(token):
            token = self._apply(logits, self._sampler, chain)
        llama.llama_sampler_accept(self._sampler, token)
        llama.llama_sampler_accept(chain, token)
        return token

    def _apply(self, logits: np.ndarray, *samplers: llama.llama_sampler_p) -> int:
        data = np.empty(len(self._ids), dtype=_TOKEN_DATA)
        data["id"], data["logit"], data["p"] = self._ids, logits, 0.0
        candidates = llama.llama_token_data_array(
            data=data.ctypes.data_as(ctypes.POINTER(llama.llama_token_data)),
            size=len(data), selected=-1, sorted=False)
        for sampler in samplers:
            llama.llama_sampler_apply(sampler, ctypes.byref(candidates))
        return int(data["id"][candidates.selected])

    def _allows(self, token: int) -> bool:
        single = np.array([(token, 1.0, 0.0)], dtype=_TOKEN_DATA)
        candidates = llama.llama_token_data_array(
            data=single.ctypes.data_as(ctypes.POINTER(llama.llama_token_data)),
            size=1, selected=-1, sorted=False)
        llama.llama_sampler_apply(self._sampler, ctypes.byref(candidates))
        return bool(np.isfinite(single["logit"][0]))

    def free(self) -> None:
        llama.llama_sampler_free(self._sampler)


def _schema_grammar(schema: dict[str, Any]) -> str:
    converter = _Converter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    converter.visit(converter.resolve_refs(orjson.loads(orjson.dumps(schema)), "schema"), "")
    return converter.format_grammar()


class _Converter(SchemaConverter):  # type: ignore[misc]
    def visit(self, schema: dict[str, Any], name: str) -> str:
        bounds = _int_bounds(schema)
        if bounds is None:
            return super().visit(schema, name)
        rule_name = name + "-" if name in RESERVED_NAMES else name or "root"  # as the base class
        self._add_rule("space", '" "?')
        return self._add_rule(rule_name, f"({int_range(*bounds)}) space")


def _int_bounds(schema: dict[str, Any]) -> tuple[int | None, int | None] | None:
    """(low, high) of an integer schema with at least one bound (None: that end is open)."""
    if schema.get("type") != "integer":
        return None
    low = _bound(schema, "minimum", "exclusiveMinimum", +1)
    high = _bound(schema, "maximum", "exclusiveMaximum", -1)
    return None if low is None and high is None else (low, high)


def _bound(schema: dict[str, Any], inclusive: str, exclusive: str, step: int) -> int | None:
    if isinstance(schema.get(exclusive), (int, float)) and not isinstance(schema[exclusive], bool):
        value = schema[exclusive]
        return (math.floor(value) if step > 0 else math.ceil(value)) + step
    if isinstance(schema.get(inclusive), (int, float)) and not isinstance(schema[inclusive], bool):
        value = schema[inclusive]
        return math.ceil(value) if step > 0 else math.floor(value)
    return None


def int_range(low: int | None, high: int | None) -> str:
    """A GBNF expression matching exactly the decimal integers from low to high (None: no
    bound on that side)."""
    if low is not None and high is not None and low > high:
        raise ValueError(f"integer range is empty: minimum {low} > maximum {high}")
    alternatives = []
    if low is None or low < 0:  # negatives: "-" and a magnitude from max(1, -high) up to -low
        smallest = 1 if high is None or high >= 0 else -high
        alternatives.append(f'"-" ({_naturals(smallest, None if low is None else -low)})')
    if high is None or high >= 0:
        alternatives.append(_naturals(0 if low is None else max(low, 0), high))
    return " | ".join(alternatives)


def _naturals(low: int, high: int | None) -> str:
    """Non-negative integers from low to high (None: unbounded) without leading zeros."""
    if high is None:  # up to the last number of low's length, then any longer number
        digits = len(str(low))
        return f"{_naturals(low, 10 ** digits - 1)} | [1-9] [0-9]{{{digits},}}"
    parts = []
    for digits in range(len(str(low)), len(str(high)) + 1):
        start = low if digits == len(str(low)) else 10 ** (digits - 1)
        end = high if digits == len(str(high)) else 10 ** digits - 1
        parts += _same_length(str(start), str(end))
    return " | ".join(parts)


def _same_length(low: str, high: str) -> list[str]:
    """Alternatives matching the digit strings low..high, all of the same length; linear in the
    length, since a full tail (0...0 to 9...9) is one run of [0-9]."""
    rest = len(low) - 1
    if low == high:
        return [f'"{low}"']
    if low[1:] == "0" * rest and high[1:] == "9" * rest:
        return [f"[{low[0]}-{high[0]}]" + " [0-9]" * rest]
    if low[0] == high[0]:
        return [f'"{low[0]}" ({" | ".join(_same_length(low[1:], high[1:]))})']
    parts = [f'"{low[0]}" ({" | ".join(_same_length(low[1:], "9" * rest))})']
    if int(high[0]) - int(low[0]) > 1:
        parts.append(f"[{int(low[0]) + 1}-{int(high[0]) - 1}]" + " [0-9]" * rest)
    parts.append(f'"{high[0]}" ({" | ".join(_same_length("0" * rest, high[1:]))})')
    return parts

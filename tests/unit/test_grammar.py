"""JSON schemas become grammars; integer bounds, which the stock converter drops, are kept."""

from __future__ import annotations

import re

import pytest

from workers.grammar import MAX_GRAMMAR_CHARS, grammar_text, int_range


def _as_regex(gbnf: str) -> re.Pattern[str]:
    """Our range expressions use only quoted literals, [a-b] classes, | and (): a regex subset."""
    pattern = re.sub(r'"([^"]*)"', lambda m: re.escape(m.group(1)), gbnf).replace(" ", "")
    return re.compile(pattern)


@pytest.mark.parametrize("low,high", [(0, 150), (7, 7), (-20, 35), (-1000, -3), (95, 1205),
                                      (0, 9), (10, 99)])
def test_int_range_matches_exactly_the_integers_in_range(low: int, high: int) -> None:
    pattern = _as_regex(int_range(low, high))
    for n in range(low - 50, high + 51):
        assert bool(pattern.fullmatch(str(n))) == (low <= n <= high), n
    assert not pattern.fullmatch("007")  # no leading zeros


@pytest.mark.parametrize("low,high", [(0, None), (17, None), (-5, None), (None, 3), (None, -40)])
def test_int_range_with_an_open_end_matches_exactly_that_side(low: int | None,
                                                              high: int | None) -> None:
    pattern = _as_regex(int_range(low, high))
    for n in [*range(-120, 121), 10**18, -(10**18)]:
        inside = (low is None or n >= low) and (high is None or n <= high)
        assert bool(pattern.fullmatch(str(n))) == inside, n


def test_a_schema_with_only_a_minimum_stays_small() -> None:
    text = grammar_text({"type": "integer", "minimum": 0})
    assert len(text) < 500


def test_an_empty_integer_range_is_refused() -> None:
    with pytest.raises(ValueError, match="empty"):
        int_range(5, 4)


def test_integer_bounds_reach_the_grammar() -> None:
    text = grammar_text({"type": "object", "properties": {
        "age": {"type": "integer", "minimum": 0, "exclusiveMaximum": 151}}, "required": ["age"]})
    assert "[1-4] [0-9]" in text and "integral-part" not in text


def test_format_json_is_any_json_value() -> None:
    assert "object" in grammar_text("json")


@pytest.mark.parametrize("schema", [{"type": "nonsense"}, {"type": "string", "pattern": "("},
                                    {"$ref": "#/definitions/missing"}])
def test_an_invalid_schema_is_a_value_error(schema: dict) -> None:
    with pytest.raises(ValueError, match="invalid JSON schema"):
        grammar_text(schema)


def test_a_schema_that_expands_too_far_is_refused() -> None:
    with pytest.raises(ValueError, match="too complex"):
        grammar_text({"type": "array", "items": {"type": "string"}, "minItems": MAX_GRAMMAR_CHARS})

"""Option validation and the merge order defaults < model parameters < request options."""

from __future__ import annotations

import pytest

from workers import options


def test_request_overrides_model_which_overrides_defaults() -> None:
    sampling, num_ctx = options.merge({"temperature": 0.2, "stop": ["<end>"]},
                                      {"temperature": 0.7}, default_num_ctx=4096)
    assert sampling["temperature"] == 0.7
    assert sampling["stop"] == ["<end>"]
    assert sampling["top_k"] == 40 and sampling["seed"] == -1
    assert num_ctx == 4096


def test_num_ctx_from_options_replaces_the_default() -> None:
    assert options.merge({}, {"num_ctx": 512}, default_num_ctx=4096)[1] == 512


def test_integers_given_as_whole_floats_are_accepted() -> None:
    assert options.validate({"num_predict": 8.0}) == {"num_predict": 8}


def test_single_stop_string_becomes_a_list() -> None:
    assert options.validate({"stop": "###"}) == {"stop": ["###"]}


@pytest.mark.parametrize("bad", [{"temperature": "hot"}, {"num_predict": 1.5},
                                 {"top_k": True}, {"stop": [1]}, {"use_mmap": "yes"}])
def test_ill_typed_values_are_refused_naming_the_option(bad: dict) -> None:
    with pytest.raises(options.InvalidOption, match=next(iter(bad))):
        options.validate(bad)


def test_unknown_option_is_refused() -> None:
    with pytest.raises(options.InvalidOption, match='invalid option "nope"'):
        options.validate({"nope": 1})


def test_null_values_are_ignored() -> None:
    assert options.validate({"temperature": None}) == {}

"""Option validation and the merge order defaults < model parameters < request options."""

from __future__ import annotations

import pytest

from workers import options


def test_request_overrides_model_which_overrides_defaults() -> None:
    sampling, load = options.merge({"temperature": 0.2, "stop": ["<end>"]},
                                   {"temperature": 0.7}, default_num_ctx=4096)
    assert sampling["temperature"] == 0.7
    assert sampling["stop"] == ["<end>"]
    assert sampling["top_k"] == 40 and sampling["seed"] == -1
    assert load["num_ctx"] == 4096


def test_num_ctx_from_options_replaces_the_default() -> None:
    assert options.merge({}, {"num_ctx": 512}, default_num_ctx=4096)[1]["num_ctx"] == 512


def test_load_options_merge_like_the_others_with_ollamas_defaults() -> None:
    _, load = options.merge({"num_batch": 128}, {"num_thread": 3}, default_num_ctx=4096)
    assert load == {"num_ctx": 4096, "num_batch": 128, "num_gpu": -1, "main_gpu": 0,
                    "num_thread": 3, "use_mmap": None}


# api/types.go DefaultOptions, Ollama 0.33 (repeat_penalty 1.0 since 0.32.10).
OLLAMA_DEFAULTS = {"num_predict": -1, "num_keep": 4, "temperature": 0.8, "top_k": 40,
                   "top_p": 0.9, "min_p": 0.0, "typical_p": 1.0, "repeat_last_n": 64,
                   "repeat_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0,
                   "seed": -1, "draft_num_predict": 4}


def test_the_defaults_are_ollamas() -> None:
    per_request, _ = options.merge({}, {}, default_num_ctx=4096)
    assert {name: per_request[name] for name in OLLAMA_DEFAULTS} == OLLAMA_DEFAULTS


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


@pytest.mark.parametrize("name", ["seed", "num_predict", "top_k", "num_keep", "repeat_last_n"])
def test_integers_too_large_for_c_are_refused_naming_the_option(name: str) -> None:
    with pytest.raises(options.InvalidOption, match=f'option "{name}" must be between'):
        options.validate({name: 1e40})


def test_num_ctx_zero_is_refused() -> None:
    with pytest.raises(options.InvalidOption, match='"num_ctx" must be between 1 and'):
        options.validate({"num_ctx": 0})


@pytest.mark.parametrize("name", ["temperature", "top_p", "num_predict", "seed"])
@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")])
def test_numbers_that_are_not_finite_are_refused(name: str, value: float) -> None:
    with pytest.raises(options.InvalidOption, match=f'"{name}" must be a finite number'):
        options.validate({name: value})


@pytest.mark.parametrize("name,value", [("seed", -(2**63)), ("seed", 2**63 - 1),
                                        ("top_k", 2**31 - 1), ("top_k", -(2**31)),
                                        ("num_ctx", 1), ("num_predict", -(2**31)),
                                        ("num_keep", -1), ("repeat_last_n", -1),
                                        ("num_thread", 512)])
def test_values_at_the_exact_range_boundaries_are_accepted(name: str, value: int) -> None:
    assert options.validate({name: value}) == {name: value}


@pytest.mark.parametrize("name,value", [("seed", -(2**63) - 1), ("seed", 2**63),
                                        ("top_k", 2**31), ("num_predict", -(2**31) - 1),
                                        ("num_keep", -2),
                                        ("num_thread", 513)])  # llama.cpp aborts there
def test_values_just_past_the_range_boundaries_are_refused(name: str, value: int) -> None:
    with pytest.raises(options.InvalidOption, match=f'"{name}" must be between'):
        options.validate({name: value})


def test_validate_words_errors_as_parameters_when_asked() -> None:
    with pytest.raises(options.InvalidOption, match='parameter "top_k" must be between'):
        options.validate({"top_k": 1e40}, "parameter")
    with pytest.raises(options.InvalidOption, match='invalid parameter "nope"'):
        options.validate({"nope": 1}, "parameter")


def test_merge_ignores_unknown_stored_parameters() -> None:
    wire, load = options.merge({"mirostat": 2, "top_k": 5}, {}, default_num_ctx=2048)
    assert "mirostat" not in wire
    assert wire["top_k"] == 5
    assert load["num_ctx"] == 2048


def test_merge_refuses_an_out_of_range_stored_parameter() -> None:
    with pytest.raises(options.InvalidOption, match='parameter "top_k" must be between'):
        options.merge({"top_k": 1e40}, {}, default_num_ctx=2048)


@pytest.mark.parametrize("name", ["mirostat", "tfs_z", "penalize_newline", "embedding_only"])
def test_options_older_ollama_had_are_accepted_and_ignored(name: str) -> None:
    assert options.validate({name: 1}) == {}


def test_the_wire_options_are_every_option_but_the_load_ones() -> None:
    wire, _ = options.merge({}, {"num_ctx": 512, "num_gpu": 1, "typical_p": 0.5}, 4096)
    assert "num_ctx" not in wire and "num_gpu" not in wire and wire["typical_p"] == 0.5
    assert set(wire) == {o.name for o in options.OPTIONS if o.group != options.LOAD}


def test_a_stop_string_longer_than_the_limit_is_refused() -> None:
    with pytest.raises(options.InvalidOption, match="at most 512 characters"):
        options.validate({"stop": ["x" * 513]})


@pytest.mark.parametrize("value", [0, -1.1])
def test_a_repeat_penalty_of_zero_or_below_is_refused_as_llama_cpp_refuses_it(value: float) -> None:
    with pytest.raises(options.InvalidOption, match='"repeat_penalty" must be greater than 0'):
        options.validate({"repeat_penalty": value})

"""How a sequence fits `num_ctx`: prompt truncation, the shift window, and the predict limit."""

from __future__ import annotations

import pytest

from workers.context import Window, predict_limit


def test_a_prompt_shorter_than_the_context_is_untouched() -> None:
    tokens = list(range(100))
    assert Window.of(2048, 4, len(tokens)).fit_prompt(tokens) == tokens


def test_a_long_prompt_keeps_its_first_tokens_and_the_newest_leaving_room_to_generate() -> None:
    tokens = list(range(25_000))
    window = Window.of(2048, 4, len(tokens))
    fitted = window.fit_prompt(tokens)
    discard = (2048 - 4) // 2
    assert window.keep == 4 and window.discard == discard
    assert len(fitted) == 2048 - discard
    assert fitted[:4] == [0, 1, 2, 3]
    assert fitted[4:] == tokens[-(2048 - discard - 4):]
    assert fitted[-1] == 24_999


def test_a_prompt_exactly_the_context_size_is_cut_to_leave_room_to_generate() -> None:
    tokens = list(range(2048))
    fitted = Window.of(2048, 4, len(tokens)).fit_prompt(tokens)
    assert len(fitted) < 2048
    assert fitted[:4] == [0, 1, 2, 3] and fitted[-1] == 2047


def test_num_keep_minus_one_keeps_the_whole_prompt_when_it_fits() -> None:
    window = Window.of(2048, -1, 100)
    assert window.keep == 100
    assert window.discard == (2048 - 100) // 2


def test_num_keep_minus_one_on_a_long_prompt_still_leaves_one_token_to_drop() -> None:
    tokens = list(range(5000))
    window = Window.of(2048, -1, len(tokens))
    assert window.keep == 2047
    assert window.discard == 1
    fitted = window.fit_prompt(tokens)
    assert fitted == tokens[:2046] + tokens[-1:]  # the newest token is never cut
    assert len(fitted) == 2048 - window.discard


def test_num_keep_larger_than_the_context_is_clamped() -> None:
    window = Window.of(512, 100_000, 10)
    assert window.keep == 511
    assert window.discard == 1


def test_num_keep_zero_keeps_only_the_newest_tokens() -> None:
    tokens = list(range(1000))
    window = Window.of(256, 0, len(tokens))
    fitted = window.fit_prompt(tokens)
    assert window.keep == 0
    assert fitted == tokens[-(256 - 128):]


@pytest.mark.parametrize("num_ctx,num_keep", [(1, 0), (2, 1), (2, 5), (3, -1), (8, 7)])
def test_a_shift_always_discards_at_least_one_token(num_ctx: int, num_keep: int) -> None:
    assert Window.of(num_ctx, num_keep, 50).discard >= 1


def test_predict_limit_unlimited_is_ten_contexts() -> None:
    assert predict_limit(-1, 2048) == 20_480


@pytest.mark.parametrize("num_predict", [0, -2, -7])
def test_predict_limit_of_zero_or_any_negative_is_open_ended_as_in_ollama(num_predict: int) -> None:
    # llm/llama_server.go boundedNumPredict: every negative is the open-ended budget; a 0 is
    # left out of llama-server's request (omitempty), which then has no limit of its own.
    assert predict_limit(num_predict, 2048) == 20_480


def test_predict_limit_keeps_a_positive_value() -> None:
    assert predict_limit(128, 2048) == 128


def test_predict_limit_caps_a_value_above_ten_contexts() -> None:
    assert predict_limit(20_481, 2048) == 20_480
    assert predict_limit(2**31 - 1, 2048) == 20_480


def test_a_one_token_context_still_holds_the_newest_prompt_token() -> None:
    assert Window.of(1, 4, 3).fit_prompt([7, 8, 9]) == [9]


def test_a_bos_the_tokenizer_added_is_kept_beside_num_keep_as_ollama_keeps_it() -> None:
    # llm/llama_server.go completionPromptForRequest: nKeep++ where the tokenizer adds BOS.
    # keep 5; limit = 2048 - (2048 - 5) // 2 = 1027; discard 3000 - 1027 after the kept ones
    tokens = list(range(3000))
    assert Window.of(2048, 4, len(tokens), bos=True).fit_prompt(tokens) == (
        tokens[:5] + tokens[5 + 3000 - 1027:])

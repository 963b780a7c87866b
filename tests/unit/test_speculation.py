"""Prompt-lookup drafts (workers/speculation.py): what is guessed, and when drafting pauses."""

from __future__ import annotations

import pytest

from workers.speculation import (MAX_DRAFT, Costs, Drafter, NgramIndex, expected_tokens,
                                 plan_drafts)


def test_the_tokens_that_followed_the_tails_latest_occurrence_are_the_draft() -> None:
    tokens = [1, 2, 3, 4, 5, 9, 1, 2, 3, 7, 8, 0, 2, 3]
    assert NgramIndex().draft(tokens, 4) == [7, 8, 0, 2]  # after the later "2 3", not the first


def test_the_longest_matching_tail_wins() -> None:
    tokens = [1, 2, 3, 50, 51, 7, 2, 3, 40, 41, 1, 2, 3]
    assert NgramIndex().draft(tokens, 2) == [50, 51]  # not [40, 41], after the later "2 3"


def test_a_tail_that_never_occurred_drafts_nothing() -> None:
    assert NgramIndex().draft([1, 2, 3, 4, 5, 6], MAX_DRAFT) == []


def test_the_index_follows_the_history_as_it_grows() -> None:
    index, tokens = NgramIndex(), [1, 2, 3, 4]
    assert index.draft(tokens, 3) == []
    tokens += [9, 1, 2]
    assert index.draft(tokens, 3) == [3, 4, 9]


def test_an_images_placeholders_end_a_draft() -> None:
    tokens = [1, 2, 3, -5, -5, 4, 1, 2]
    assert NgramIndex().draft(tokens, 4) == [3]


# Decode times (ms) by batch size as measured here on the CPU, and as a GPU gives them.
CPU = Costs({1: 12.4, 2: 23.0, 3: 38.9, 4: 32.3, 8: 51.0, 16: 84.8})
GPU = Costs({1: 10.0, 2: 10.1, 3: 10.2, 4: 10.3, 8: 10.8, 16: 12.0})


def test_a_sequences_acceptance_follows_its_latest_drafts() -> None:
    drafter = Drafter()
    for _ in range(10):
        drafter.record(4, 0)
    assert drafter.acceptance < 0.02 and (drafter.drafted, drafter.accepted) == (40, 0)
    drafter.record(4, 4)
    assert drafter.acceptance > 0.3


def test_costs_between_and_past_the_measured_sizes_are_linear() -> None:
    assert CPU(6) == pytest.approx(41.65) and CPU(32) == pytest.approx(152.4)


def test_expected_tokens_count_each_draft_token_kept_while_all_before_it_were() -> None:
    assert expected_tokens(0.5, 0) == 1 and expected_tokens(0.5, 2) == 1.75


def test_where_a_wider_decode_costs_nearly_per_token_a_lone_stream_drafts_only_sure_bets() -> None:
    assert plan_drafts(1, [(0.85, 8)], CPU, room=64) == [0]
    assert plan_drafts(1, [(0.95, 8)], CPU, room=64) == [1]


def test_where_a_wider_decode_is_nearly_free_a_lone_stream_fills_the_exact_batch() -> None:
    assert plan_drafts(1, [(0.5, 8)], GPU, room=64) == [2]  # 3 tokens: rounding unchanged


def test_a_batch_of_four_or_more_takes_drafts_while_they_raise_tokens_per_cost() -> None:
    taken = plan_drafts(4, [(0.9, 8)] * 4, CPU, room=64)
    assert sum(taken) == 12 and taken[0] > 0  # up to STEP_TOKENS, the first offer first
    assert plan_drafts(4, [(0.1, 8)] * 4, CPU, room=64) == [0, 0, 0, 0]


def test_drafts_never_take_more_than_the_room_left() -> None:
    assert plan_drafts(4, [(0.9, 8)] * 2, GPU, room=5) == [5, 0]


def test_a_draft_models_guesses_are_taken_only_where_they_pay_for_their_own_decodes() -> None:
    one_step = GPU(1)
    assert plan_drafts(1, [(0.9, 4)], GPU, room=64, draft_cost=0.05 * one_step) == [2]
    assert plan_drafts(1, [(0.9, 4)], GPU, room=64, draft_cost=one_step) == [0]

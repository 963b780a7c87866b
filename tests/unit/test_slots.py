"""SlotPool: which slot a sequence takes and what cached cells it keeps."""

from __future__ import annotations

import pytest

from workers.slots import SlotPool


def test_a_sequence_takes_the_idle_slot_sharing_the_longest_start_with_it() -> None:
    pool = SlotPool(3, reuse=True)
    held = {pool.take(tokens)[0]: tokens for tokens in ([1, 2, 3], [1, 2, 9, 9], [7])}
    for slot, tokens in held.items():
        pool.give_back(slot, tokens)
    slot, keep, _ = pool.take([1, 2, 9, 9, 4, 5])
    assert (held[slot], keep) == ([1, 2, 9, 9], 4)


def test_the_last_token_is_always_computed_again_for_its_logits() -> None:
    pool = SlotPool(1, reuse=True)
    pool.give_back(pool.take([1, 2, 3])[0], [1, 2, 3], last_chunk=5)
    assert pool.take([1, 2, 3]) == (0, 2, False)


def test_a_prompt_that_extends_the_cached_tokens_keeps_all_they_share() -> None:
    pool = SlotPool(1, reuse=True)
    pool.give_back(pool.take([1, 2, 3])[0], [1, 2, 3, 7, 8], last_chunk=1)
    assert pool.take([1, 2, 3, 7, 8, 9]).keep == 5


def test_a_repeated_prompt_computes_again_the_chunk_that_ended_it_the_first_time() -> None:
    pool = SlotPool(1, reuse=True)
    prompt = list(range(1, 11))
    pool.give_back(pool.take(prompt)[0], prompt + [50, 51], last_chunk=6)  # prompt + answer
    assert pool.take(prompt).keep == 6


def test_without_a_shared_start_the_least_recently_used_slot_is_taken() -> None:
    pool = SlotPool(2, reuse=True)
    first = pool.take([1]).slot
    second = pool.take([2]).slot
    pool.give_back(second, [2])
    pool.give_back(first, [1])  # used last: its cache is the one to keep
    assert pool.take([5, 6])[0] == second


def test_a_taken_slot_holds_no_idle_cells_until_given_back() -> None:
    pool = SlotPool(2, reuse=True)
    slot = pool.take([1, 2]).slot
    pool.give_back(slot, [1, 2])
    assert pool.idle_cells == 2
    pool.take([1, 2, 3])
    assert pool.idle_cells == 0


def test_eviction_empties_the_least_recently_used_idle_cache_first() -> None:
    pool = SlotPool(3, reuse=True)
    a = pool.take([1]).slot
    b = pool.take([2]).slot
    pool.give_back(b, [2, 2])
    pool.give_back(a, [1])
    assert pool.evict() == b
    assert pool.idle_cells == 1
    assert pool.evict() == a
    assert pool.evict() is None


def test_without_reuse_no_cells_are_kept_or_counted() -> None:
    pool = SlotPool(1, reuse=False)
    slot = pool.take([1, 2, 3]).slot
    pool.give_back(slot, [1, 2, 3])
    assert pool.idle_cells == 0
    assert pool.take([1, 2, 3]) == (0, 0, False)


def test_taking_more_slots_than_exist_is_an_error() -> None:
    pool = SlotPool(1, reuse=True)
    pool.take([1])
    with pytest.raises(RuntimeError, match="no free sequence slot"):
        pool.take([2])


def test_shared_cells_mark_the_sequence_that_keeps_them() -> None:
    pool = SlotPool(1, reuse=True)
    pool.give_back(pool.take([1, 2, 3]).slot, [1, 2, 3], shared=True)
    assert pool.take([1, 2, 3, 4]) == (0, 3, True)


def test_a_slot_that_keeps_nothing_of_shared_cells_is_not_shared() -> None:
    pool = SlotPool(1, reuse=True)
    pool.give_back(pool.take([1, 2, 3]).slot, [1, 2, 3], shared=True)
    assert pool.take([9]) == (0, 0, False)

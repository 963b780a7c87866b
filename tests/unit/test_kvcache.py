"""The KV cache's decisions, table by table, on a fake memory that records llama.cpp's calls."""

from __future__ import annotations

from typing import Any

import pytest

from workers.context import Window
from workers.kvcache import ADMIT_HEADROOM, KVCache
from workers.sequence import ALL, Sequence, Status


class FakeMemory:
    def __init__(self, can_shift: bool = True) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self._can_shift = can_shift

    def remove(self, seq: int, start: int = -1, end: int = -1) -> bool:
        self.calls.append(("remove", seq, start, end))
        return True

    def copy(self, source: int, dest: int, start: int, end: int) -> None:
        self.calls.append(("copy", source, dest, start, end))

    def move(self, seq: int, start: int, end: int, delta: int) -> None:
        self.calls.append(("move", seq, start, end, delta))

    def clear(self, data: bool = False) -> None:
        self.calls.append(("clear",))

    def can_shift(self) -> bool:
        return self._can_shift


def seq(job_id: int, tokens: list[int], status: Status = Status.WAITING, limit: int = 8,
        n_computed: int = 0, slot: int = -1) -> Sequence:
    s = Sequence(job_id, {}, False, 0, status=status)  # type: ignore[arg-type]
    s.tokens, s.limit, s.n_computed, s.slot = list(tokens), limit, n_computed, slot
    return s


def cache(cells: int = 100, slots: int = 4, num_ctx: int = 64, reuse: bool = True,
          memory: FakeMemory | None = None) -> KVCache:
    return KVCache(memory or FakeMemory(), cells, slots, num_ctx, reuse)


def run(kv: KVCache, s: Sequence) -> None:
    """Admits `s` and marks its tokens computed, as a finished prefill leaves it."""
    kv.admit_waiting([s])
    s.n_computed, s.status = len(s.tokens), Status.GENERATING


@pytest.mark.parametrize("prompts,admitted", [
    ([10, 10, 10], [True, True, True]),  # 3 x (10 + 8 to generate) fit in 100 cells
    ([40, 45, 10], [True, True, False]),  # 15 cells are left; the third needs 18
    ([95, 5], [False, False]),  # the first does not fit: the second waits behind it
    ([5, 90, 5], [True, False, False]),  # arrival order holds
])
def test_waiting_sequences_are_admitted_in_arrival_order_while_cells_allow(
        prompts: list[int], admitted: list[bool]) -> None:
    kv = cache(cells=100, num_ctx=200)
    seqs = [seq(i, list(range(n))) for i, n in enumerate(prompts)]
    kv.admit_waiting(seqs)
    assert [s.status == Status.PREFILLING for s in seqs] == admitted


def test_admission_counts_the_headroom_to_generate_but_no_more_than_it_may_generate() -> None:
    kv = cache(cells=30, num_ctx=30)
    few, many = seq(1, list(range(20)), limit=2), seq(2, list(range(20)), limit=100)
    kv.admit_waiting([few])
    assert few.status == Status.PREFILLING  # 20 + 2 fit in 30
    kv.release(few, [])
    kv = cache(cells=30, num_ctx=84)
    kv.admit_waiting([many])
    assert many.status == Status.WAITING  # 20 + ADMIT_HEADROOM do not
    assert ADMIT_HEADROOM == 64


def test_a_request_takes_the_idle_slot_holding_its_start_and_keeps_those_cells() -> None:
    memory = FakeMemory()
    kv = cache(memory=memory)
    other, first = seq(1, [9, 9]), seq(2, [1, 2, 3, 4, 5])
    for s in (other, first):
        run(kv, s)
    slot = first.slot
    for s in (other, first):
        kv.release(s, [])
    follow = seq(3, [1, 2, 3, 4, 5, 6, 7])
    kv.admit_waiting([follow])
    assert (follow.slot, follow.n_computed, follow.reused) == (slot, 5, 5)
    assert memory.calls[-1] == ("remove", slot, 5, -1)


def test_a_repeated_prompt_computes_again_the_chunk_that_ended_it() -> None:
    kv = cache()
    first = seq(1, [1, 2, 3, 4, 5])
    run(kv, first)
    first.last_chunk = 2  # its last prefill chunk began at position 2
    kv.release(first, [])
    again = seq(2, [1, 2, 3, 4, 5])
    kv.admit_waiting([again])
    assert again.n_computed == 2


def test_a_prompt_shares_the_cells_a_running_sequence_computed_for_its_start() -> None:
    memory = FakeMemory()
    kv = cache(memory=memory)
    running = seq(1, [1, 2, 3, 4, 5, 6])
    run(kv, running)
    newcomer = seq(2, [1, 2, 3, 4, 9])
    kv.admit_waiting([running, newcomer])
    assert newcomer.n_computed == 4 and newcomer.shared and running.shared
    assert ("copy", running.slot, newcomer.slot, 0, 4) in memory.calls


def test_cells_after_a_shift_are_not_shared() -> None:
    kv = cache()
    running = seq(1, [1, 2, 3, 4, 5, 6])
    run(kv, running)
    running.clean = 2  # a shift touched what follows position 2
    newcomer = seq(2, [1, 2, 3, 4, 9])
    kv.admit_waiting([running, newcomer])
    assert newcomer.n_computed == 2


def test_making_room_empties_idle_cached_slots_least_recently_used_first() -> None:
    memory = FakeMemory()
    kv = cache(cells=30, num_ctx=30, memory=memory)
    old, recent = seq(1, list(range(10)), limit=1), seq(2, list(range(100, 110)), limit=1)
    slots = []
    for s in (old, recent):
        run(kv, s)
        slots.append(s.slot)
        kv.release(s, [])
    needy = seq(3, list(range(200, 215)), limit=1)  # 15 + 1: needs one slot's 10 cells
    kv.admit_waiting([needy])
    assert needy.status == Status.PREFILLING
    assert ("remove", slots[0], -1, -1) in memory.calls
    assert ("remove", slots[1], -1, -1) not in memory.calls
    assert kv.used([needy]) == 10  # the recent slot's cells are still cached


def test_a_full_cache_preempts_the_newest_sequence_which_waits_to_compute_again() -> None:
    kv = cache(cells=20, num_ctx=20)
    older, newer = seq(1, list(range(8))), seq(2, list(range(100, 108)))
    for s in (older, newer):
        s.status, s.slot, s.n_computed = Status.GENERATING, s.job_id - 1, 8
    older.tokens += list(range(50, 56))  # 14 + 8 > 20
    kv.make_room([older, newer])
    assert older.status == Status.GENERATING
    assert (newer.status, newer.n_computed, newer.slot) == (Status.WAITING, 0, -1)


def test_the_last_admitted_sequence_is_never_preempted() -> None:
    kv = cache(cells=10, num_ctx=10)
    alone = seq(1, list(range(12)), status=Status.GENERATING, slot=0, n_computed=12)
    kv.make_room([alone])
    assert alone.status == Status.GENERATING


def test_a_full_context_drops_the_oldest_half_after_keep() -> None:
    memory = FakeMemory()
    kv = cache(memory=memory)
    s = seq(1, list(range(64)), status=Status.GENERATING, slot=0, n_computed=64)
    s.window = Window.of(64, 4, 10)  # keep 4, discard 30
    assert kv.shift(s) is True
    assert memory.calls == [("remove", 0, 4, 34), ("move", 0, 34, -1, -30)]
    assert s.tokens == [0, 1, 2, 3, *range(34, 64)] and s.n_computed == 34 and s.clean == 4


def test_a_sequence_sharing_cells_computes_again_instead_of_shifting() -> None:
    memory = FakeMemory()
    kv = cache(memory=memory)
    s = seq(1, list(range(64)), status=Status.GENERATING, slot=0, n_computed=64)
    s.window, s.shared = Window.of(64, 4, 10), True
    assert kv.shift(s) is True
    assert memory.calls == [("remove", 0, -1, -1)]
    assert (s.status, s.n_computed, s.shared, s.clean) == (Status.PREFILLING, 0, False, ALL)
    assert len(s.tokens) == 34


def test_a_cache_that_cannot_shift_says_so() -> None:
    kv = cache(memory=FakeMemory(can_shift=False))
    s = seq(1, list(range(64)), status=Status.GENERATING, slot=0, n_computed=64)
    s.window = Window.of(64, 4, 10)
    assert kv.shift(s) is False and len(s.tokens) == 64


def test_a_finished_sequence_leaves_its_reusable_cells_under_its_slot() -> None:
    memory = FakeMemory()
    kv = cache(memory=memory)
    s = seq(1, list(range(20)))
    run(kv, s)
    s.clean = 12
    kv.release(s, [])
    assert memory.calls[-1] == ("remove", 0, 12, -1) and kv.used([]) == 12


def test_batch_invariant_mode_hands_out_empty_slots_and_clears_an_idle_cache() -> None:
    memory = FakeMemory()
    kv = cache(memory=memory, reuse=False)
    first = seq(1, [1, 2, 3, 4])
    run(kv, first)
    kv.release(first, [])
    assert memory.calls[-2:] == [("remove", 0, 0, -1), ("clear",)]
    again = seq(2, [1, 2, 3, 4])
    kv.admit_waiting([again])
    assert again.n_computed == 0

"""A model's sequence slots and what its KV cache still holds for the idle ones.

A slot is a llama.cpp sequence id. A finished request's cells stay in the cache under its slot,
so a later request that starts with the same tokens (the next turn of a chat, a shared system
prompt) takes that slot and skips computing them, as llama-server picks the slot with the
longest common prefix. Idle cells give way, least recently used first, when running sequences
need room. Cells can also be shared: a sequence may copy the prefix a running one has computed
(`llama_memory_seq_cp` adds it to those cells), so eight requests with one system prompt compute
it once. Shared cells have one position for all their sequences, so a sequence that shares must
never move its cells (a context shift): the `shared` mark follows its cells into its idle slot.
Pure bookkeeping: the engine makes the matching llama.cpp calls.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import NamedTuple


@dataclass
class Slot:
    id: int
    cached: list[int] = field(default_factory=list)  # tokens whose cells an idle slot keeps
    busy: bool = False
    last_used: int = 0
    shared: bool = False  # its cached cells are (or were) shared with another sequence
    last_chunk: int = 0  # where the prefill chunk that ended its prompt began


class Taken(NamedTuple):
    slot: int
    keep: int  # cached tokens kept: the sequence need not compute them
    shared: bool  # the kept cells are shared: the sequence must not shift them


class SlotPool:
    def __init__(self, count: int, reuse: bool) -> None:
        self._slots = [Slot(i) for i in range(count)]
        self._reuse = reuse  # False: a slot is handed out empty (batch-invariant mode)
        self._clock = itertools.count(1)

    @property
    def idle_cells(self) -> int:
        return sum(len(s.cached) for s in self._slots if not s.busy)

    @property
    def reuse(self) -> bool:
        return self._reuse

    def take(self, tokens: list[int]) -> Taken:
        """The slot for a sequence that will hold `tokens`, and what of its cache it keeps. At
        least the last token is always computed again: sampling needs its logits. A prompt the
        cache holds whole (a repeated request) computes again the whole chunk that ended it
        the first time: the same batch shape gives the same numbers, so a seeded request
        repeats its tokens exactly."""
        free = [s for s in self._slots if not s.busy]
        if not free:
            raise RuntimeError("no free sequence slot")
        best = max(free, key=lambda s: (common_prefix(s.cached, tokens), -s.last_used))
        common = common_prefix(best.cached, tokens) if self._reuse else 0
        keep = min(best.last_chunk, len(tokens) - 1) if common >= len(tokens) else common
        keep = max(keep, 0)
        taken = Taken(best.id, keep, best.shared and keep > 0)
        best.busy, best.cached, best.shared = True, [], False
        return taken

    def give_back(self, slot_id: int, cached: list[int], shared: bool = False,
                  last_chunk: int = 0) -> None:
        """The slot is idle again, its cells holding `cached` (empty: the engine cleared them);
        `last_chunk`: where the prefill chunk that ended the prompt began."""
        slot = self._slots[slot_id]
        slot.busy, slot.last_used, slot.last_chunk = False, next(self._clock), last_chunk
        slot.cached = list(cached) if self._reuse else []
        slot.shared = shared and bool(slot.cached)

    def evict(self) -> int | None:
        """The least recently used idle slot that holds cells, now marked empty; None if none."""
        holding = [s for s in self._slots if not s.busy and s.cached]
        if not holding:
            return None
        victim = min(holding, key=lambda s: s.last_used)
        victim.cached, victim.shared = [], False
        return victim.id


def common_prefix(a: list[int], b: list[int]) -> int:
    """Length of the shared start; binary search over slice comparisons, which run in C."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo

"""A model's KV cells: who holds which, what idle slots keep for reuse, and every change to them.

Every `llama_memory_*` call of the worker is made here (`LlamaMemory`), and every decision about
cells: admission (arrival order, while a sequence's tokens and a little room to generate fit),
sharing a running sequence's prefix, making room (idle cached cells first, least recently used,
then preempting the newest sequence, which computes again later), shifting a full context, and
what a finished sequence leaves for the next request. The decisions take the memory as an
object, so they are table-tested with a fake one (tests/unit/test_kvcache.py).
"""

from __future__ import annotations

from typing import Iterable, Protocol

import llama_cpp as llama

from workers.sequence import ALL, Sequence, Status
from workers.slots import SlotPool, common_prefix

# Cells a sequence must find free beyond its prompt to be admitted: room for its first tokens.
# Past that, a full cache preempts the newest sequence rather than refuse the oldest.
ADMIT_HEADROOM = 64


class Memory(Protocol):
    """The cache operations, by llama.cpp sequence id; positions [start, end), -1: open."""

    def remove(self, seq: int, start: int = -1, end: int = -1) -> bool: ...
    def copy(self, source: int, dest: int, start: int, end: int) -> None: ...
    def move(self, seq: int, start: int, end: int, delta: int) -> None: ...
    def clear(self, data: bool = False) -> None: ...
    def can_shift(self) -> bool: ...


class LlamaMemory:
    def __init__(self, ctx: llama.llama_context_p) -> None:
        self._memory = llama.llama_get_memory(ctx)

    def remove(self, seq: int, start: int = -1, end: int = -1) -> bool:
        """False where the memory cannot cut a sequence there (a recurrent model's state)."""
        return bool(llama.llama_memory_seq_rm(self._memory, seq, start, end))

    def copy(self, source: int, dest: int, start: int, end: int) -> None:
        llama.llama_memory_seq_cp(self._memory, source, dest, start, end)

    def move(self, seq: int, start: int, end: int, delta: int) -> None:
        llama.llama_memory_seq_add(self._memory, seq, start, end, delta)

    def clear(self, data: bool = False) -> None:
        llama.llama_memory_clear(self._memory, data)

    def can_shift(self) -> bool:
        return bool(llama.llama_memory_can_shift(self._memory))


class KVCache:
    def __init__(self, memory: Memory, cells: int, slots: int, num_ctx: int, reuse: bool) -> None:
        self.memory = memory
        self.cells = cells
        self.num_ctx = num_ctx
        self._pool = SlotPool(slots, reuse)

    @property
    def reuse(self) -> bool:
        return self._pool.reuse

    def used(self, seqs: Iterable[Sequence]) -> int:
        """Cells that hold something now: sequences' and idle slots' cached ones. A shared cell
        counts once per sequence in it, so this can overstate: capped at the size."""
        return min(self.cells, self._pool.idle_cells + sum(s.n_computed for s in seqs))

    def free_cells(self, seqs: Iterable[Sequence]) -> int:
        """Cells nothing holds or will hold: room for a step's drafts."""
        return self.cells - self._committed(seqs)

    def _committed(self, seqs: Iterable[Sequence]) -> int:
        """Cells in use once every admitted sequence has computed all it holds (its pending
        token included): what admission and preemption count."""
        return self._pool.idle_cells + sum(len(s.tokens) for s in seqs if s.holds_cells)

    def _free_idle(self, need: int, seqs: list[Sequence]) -> bool:
        """Empties idle cached slots, least recently used first, until `need` cells are free."""
        while self.cells - self._committed(seqs) < need:
            victim = self._pool.evict()
            if victim is None:
                return False
            self.memory.remove(victim)
        return True

    # ---- admission ---------------------------------------------------------------------------

    def admit_waiting(self, seqs: list[Sequence]) -> None:
        """Gives waiting sequences a slot, in arrival order, while free cells allow room for
        their tokens and first few generated ones. The first that does not fit stops the rest:
        arrival order holds, and the running sequences free cells as they finish."""
        for seq in seqs:
            if seq.status == Status.WAITING and not self._admit(seq, seqs):
                return

    def _admit(self, seq: Sequence, seqs: list[Sequence]) -> bool:
        headroom = min(seq.limit - len(seq.generated), ADMIT_HEADROOM)
        slot, keep, shared = self._pool.take(seq.tokens)  # its cached cells now count as its own
        if not self._free_idle(min(len(seq.tokens) + headroom, self.num_ctx), seqs):
            self._pool.give_back(slot, seq.tokens[:keep], shared)
            return False
        self.memory.remove(slot, keep, -1)
        source, common = self._running_prefix(seq, seqs)
        if source is not None and common > keep:
            # A running sequence has computed more of this start: share its cells.
            self.memory.remove(slot)
            self.memory.copy(source.slot, slot, 0, common)
            keep, shared, source.shared = common, True, True
        seq.slot, seq.n_computed, seq.clean, seq.shared = slot, keep, ALL, shared
        seq.status = Status.PREFILLING
        if not seq.generated:
            seq.reused = keep
        return True

    def _running_prefix(self, seq: Sequence, seqs: list[Sequence]) -> tuple[Sequence | None, int]:
        """The admitted sequence whose computed, reusable cells share the longest start with
        `seq`'s tokens, and how many of them it may take (never its last token)."""
        best: tuple[Sequence | None, int] = (None, 0)
        if not self.reuse:
            return best
        for other in seqs:
            if other is seq or other.slot < 0:
                continue
            usable = other.tokens[:min(other.clean, other.n_computed)]
            common = min(common_prefix(usable, seq.tokens), len(seq.tokens) - 1)
            if common > best[1]:
                best = (other, common)
        return best

    # ---- making room -------------------------------------------------------------------------

    def make_room(self, seqs: list[Sequence]) -> None:
        """Makes the admitted sequences' tokens fit in the cache (each generated token adds
        one): idle cached cells go first, then the newest sequences are preempted."""
        while not self._free_idle(0, seqs):
            # Not one whose grammar pass is running: its next token is on its way.
            admitted = [s for s in seqs if s.holds_cells and s.status != Status.SAMPLING]
            if len(admitted) <= 1:
                return
            self.preempt(newest(admitted))

    def preempt(self, seq: Sequence) -> None:
        """Frees the sequence's cells; it computes its tokens again once cells are free."""
        self.memory.remove(seq.slot)
        self._pool.give_back(seq.slot, [])
        seq.slot, seq.n_computed, seq.status, seq.shared = -1, 0, Status.WAITING, False

    def shift(self, seq: Sequence) -> bool:
        """Drops the oldest half after `keep` from a full context, so generation can go on;
        False when this cache cannot move cells (the sequence must end)."""
        window = seq.window
        assert window is not None
        start, end = window.keep, window.keep + window.discard
        if seq.shared:
            # Moving shared cells would move them for the other sequences too: let go of them
            # all and compute what remains afresh instead.
            self.memory.remove(seq.slot)
            del seq.tokens[start:end]
            seq.n_computed, seq.shared, seq.status, seq.clean = 0, False, Status.PREFILLING, ALL
            return True
        if not self.memory.can_shift():
            return False
        self.memory.remove(seq.slot, start, end)
        self.memory.move(seq.slot, end, -1, -window.discard)
        del seq.tokens[start:end]
        seq.n_computed -= window.discard
        # Cells after `keep` were computed with the dropped tokens in view: not reusable.
        seq.clean = min(seq.clean, start)
        return True

    def forget(self, seq: Sequence, pos: int) -> None:
        """Removes what a failed decode may have left of the sequence from `pos` on."""
        self.memory.remove(seq.slot, pos, -1)

    # ---- leaving -----------------------------------------------------------------------------

    def release(self, seq: Sequence, others: list[Sequence]) -> None:
        """A finished or cancelled sequence's cells: kept under its slot for a later request
        with the same start (the next chat turn), as far as they are reusable."""
        if seq.slot >= 0:
            keep = min(seq.clean, seq.n_computed) if self.reuse else 0
            self.memory.remove(seq.slot, keep, -1)
            self._pool.give_back(seq.slot, seq.tokens[:keep], seq.shared, seq.last_chunk)
            seq.slot = -1
        if not self.reuse and not others:
            # Batch-invariant mode: an idle cache starts over from cell 0, so a request run
            # alone always sees the same KV layout and gives the same tokens for a seed.
            self.memory.clear()


def newest(seqs: list[Sequence]) -> Sequence:
    return max(seqs, key=lambda s: s.job_id)

"""What each sequence puts into the next batch: pure functions, tested without llama.cpp.

Sequences that are generating add their one pending token first, so prompt processing never
delays the next token of a running answer. Prompts (and sequences recomputing after a
preemption) then share what is left of the step: each gets a fair share in arrival order, so
one long prompt cannot starve a short one behind it, and leftover room goes to the oldest.
While anything is generating, the prefill part of a step is sized by `StepCosts` so the step
takes about twice a decode-only step: a long prompt being admitted slows running streams by at
most ~2x instead of stalling them for a whole batch. Where more prompts wait than streams run
(a burst of requests, whose first started alone), the step takes one decode step more per
waiting prompt and running stream: the running streams together give up about one decode
step per prompt, and the burst is not admitted 16 tokens a step (seconds to a first token).
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from typing import Protocol, Sequence

from workers.sequence import Status

MIN_CHUNK = 16  # smallest prefill share worth a place in the batch


class Planned(Protocol):
    status: Status
    tokens: list[int]  # what the sequence's cells hold or will hold, position = index
    n_computed: int  # tokens[:n_computed] are in the KV cache
    image_starts: list[int]  # where its images start: the engine decodes those, not the batch
    draft: list[int]  # tokens guessed to follow its pending one (workers/speculation.py)


@dataclass(frozen=True)
class Work:
    seq: Planned
    tokens: list[int]
    pos: int  # position of tokens[0]
    logits: bool  # sample after the last token
    drafted: int = 0  # the last this many tokens are a draft: each needs its logits too


def plan_step(seqs: Sequence[Planned], budget: int, prefill_budget: int) -> list[Work]:
    """`budget`: tokens the batch (and the free KV cells) can take; `prefill_budget`: at most
    this many of them for prompts. `seqs` in arrival order."""
    works = [Work(s, s.tokens[s.n_computed:] + s.draft, s.n_computed, True, len(s.draft))
             for s in seqs if s.status == Status.GENERATING]
    room = min(budget - sum(len(w.tokens) for w in works), prefill_budget)
    ends = {id(s): prefill_end(s) for s in seqs if s.status == Status.PREFILLING}
    filling = [s for s in seqs if id(s) in ends and s.n_computed < ends[id(s)]]
    if room <= 0 or not filling:
        return works
    share = max(room // len(filling), MIN_CHUNK)
    takes = {id(s): 0 for s in filling}
    for fair in (True, False):  # first a fair share each, then what is left, oldest first
        for seq in filling:
            if room <= 0:
                break
            remaining = ends[id(seq)] - seq.n_computed - takes[id(seq)]
            take = min(remaining, room, share if fair else room)
            takes[id(seq)] += take
            room -= take
    for seq in filling:
        take = takes[id(seq)]
        if take:
            end = seq.n_computed + take
            works.append(Work(seq, seq.tokens[seq.n_computed:end], seq.n_computed,
                              end == len(seq.tokens)))
    return works


def prefill_end(seq: Planned) -> int:
    """Where the batch's share of a prefilling sequence ends: the start of its next image (or
    its last token); at an image's start it has none."""
    i = bisect_left(seq.image_starts, seq.n_computed)
    return seq.image_starts[i] if i < len(seq.image_starts) else len(seq.tokens)


class StepCosts:
    """Learns what a decode-only step and a prefill token cost on this machine (moving
    averages), to size the prefill part of steps that also decode. A prefill token's cost is
    learnt from prefill-only steps of some size only: small chunks cost more per token (the
    step's fixed part), and learning from them would shrink the chunks further and further."""

    SMOOTHING = 0.2
    MEASURE_FROM = 64  # prefill tokens a step needs to measure their cost

    def __init__(self) -> None:
        self.decode_ns = 0.0  # a step of only generating sequences
        self.token_ns = 0.0  # one prefill token

    def record(self, decoded: int, prefilled: int, ns: int) -> None:
        if prefilled == 0 and decoded:
            self.decode_ns = self._mix(self.decode_ns, ns)
        elif decoded == 0 and prefilled >= self.MEASURE_FROM:
            self.token_ns = self._mix(self.token_ns, ns / prefilled)

    def prefill_budget(self, cap: int, generating: int, waiting: int) -> int:
        """Prompt tokens for a step that decodes `generating` sequences while `waiting`
        prompts are prefilling (the module's rule), at most `cap`."""
        if not generating or not self.decode_ns or not self.token_ns:
            return cap
        steps = max(1.0, waiting / generating)
        return max(MIN_CHUNK, min(cap, int(steps * self.decode_ns / self.token_ns)))

    def _mix(self, old: float, new: float) -> float:
        return new if not old else old + self.SMOOTHING * (new - old)

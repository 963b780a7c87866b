"""What each sequence puts into the next batch: a pure function, tested without llama.cpp.

Sequences that are generating add their one sampled token first, so prompt processing never
delays the next token of a running answer; prompts then fill what is left of the batch, oldest
slot first, in chunks. Only the last token of a finished prompt asks for logits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence


class Planned(Protocol):
    prompt: list[int]
    n_past: int  # tokens already in the KV cache
    next_token: int | None  # sampled, not yet decoded (None while the prompt is pending)


@dataclass(frozen=True)
class Work:
    seq: Planned
    tokens: list[int]
    pos: int  # position of tokens[0]
    logits: bool  # sample after the last token


def plan(seqs: Sequence[Planned], budget: int) -> list[Work]:
    works = [Work(s, [s.next_token], s.n_past, True) for s in seqs if s.next_token is not None]
    room = budget - len(works)
    for seq in seqs:
        remaining = len(seq.prompt) - seq.n_past
        if seq.next_token is not None or remaining <= 0:
            continue
        if room <= 0:
            break
        take = min(remaining, room)
        works.append(Work(seq, seq.prompt[seq.n_past: seq.n_past + take], seq.n_past,
                          take == remaining))
        room -= take
    return works

"""What each sequence puts into the next batch: generating tokens first, then prompt chunks."""

from __future__ import annotations

from dataclasses import dataclass, field

from workers.planner import plan


@dataclass(eq=False)
class Seq:
    """A stand-in sequence: its prompt, how much of it is cached, and a sampled token if any."""
    prompt: list[int] = field(default_factory=list)
    n_past: int = 0
    next_token: int | None = None


def generating(n_past: int, token: int) -> Seq:
    return Seq(prompt=list(range(n_past)), n_past=n_past, next_token=token)


def pending(length: int, n_past: int = 0, start: int = 100) -> Seq:
    return Seq(prompt=list(range(start, start + length)), n_past=n_past)


def test_generating_sequences_add_one_token_each_with_logits_at_their_position() -> None:
    a, b = generating(7, token=42), generating(3, token=43)
    works = plan([a, b], budget=512)
    assert [(w.seq, w.tokens, w.pos, w.logits) for w in works] == [(a, [42], 7, True),
                                                                  (b, [43], 3, True)]


def test_generating_sequences_come_before_any_prompt_even_if_listed_later() -> None:
    prompt, gen = pending(5), generating(10, token=9)
    works = plan([prompt, gen], budget=512)
    assert [w.seq for w in works] == [gen, prompt]


def test_prompts_fill_the_remaining_budget_oldest_first() -> None:
    gen = generating(4, token=1)
    older, newer = pending(6, start=100), pending(6, start=200)
    works = plan([gen, older, newer], budget=10)
    assert [w.seq for w in works] == [gen, older, newer]
    assert works[1].tokens == list(range(100, 106))
    assert works[2].tokens == [200, 201, 202]  # 10 - 1 generating - 6 of the older prompt
    assert sum(len(w.tokens) for w in works) == 10


def test_a_prompt_that_does_not_fit_leaves_later_prompts_waiting() -> None:
    older, newer = pending(20, start=100), pending(3, start=200)
    works = plan([older, newer], budget=8)
    assert [w.seq for w in works] == [older]
    assert works[0].tokens == list(range(100, 108))


def test_only_the_chunk_that_completes_a_prompt_asks_for_logits() -> None:
    unfinished, finished = pending(10, start=100), pending(4, start=200)
    works = plan([finished, unfinished], budget=9)
    by_seq = {id(w.seq): w for w in works}
    assert by_seq[id(finished)].logits is True
    assert by_seq[id(unfinished)].tokens == [100, 101, 102, 103, 104]
    assert by_seq[id(unfinished)].logits is False


def test_a_prompt_larger_than_the_budget_is_split_across_steps() -> None:
    seq = pending(10, start=100)
    chunks = []
    while True:
        works = plan([seq], budget=4)
        if not works:
            break
        (work,) = works
        chunks.append((work.tokens, work.pos, work.logits))
        seq.n_past += len(work.tokens)  # what the engine does once the batch is decoded
    assert chunks == [([100, 101, 102, 103], 0, False),
                      ([104, 105, 106, 107], 4, False),
                      ([108, 109], 8, True)]


def test_a_partly_cached_prompt_continues_from_n_past() -> None:
    seq = pending(10, n_past=6, start=100)
    (work,) = plan([seq], budget=512)
    assert (work.tokens, work.pos, work.logits) == ([106, 107, 108, 109], 6, True)


def test_a_fully_cached_prompt_without_a_next_token_contributes_nothing() -> None:
    cached = pending(5, n_past=5)
    other = pending(2, start=200)
    works = plan([cached, other], budget=512)
    assert [w.seq for w in works] == [other]
    assert plan([cached], budget=512) == []


def test_nothing_to_do_gives_an_empty_plan() -> None:
    assert plan([], budget=512) == []


def test_prompts_wait_while_generating_sequences_use_the_whole_budget() -> None:
    gens = [generating(2, token=t) for t in range(3)]
    prompt = pending(5)
    works = plan([prompt, *gens], budget=3)
    assert [w.seq for w in works] == gens


def test_prompts_get_nothing_when_generating_sequences_exceed_the_budget() -> None:
    gens = [generating(2, token=t) for t in range(4)]
    prompt = pending(5)
    works = plan([prompt, *gens], budget=2)
    assert prompt not in [w.seq for w in works]

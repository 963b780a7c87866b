"""plan_step: what each sequence puts into the next batch, and StepCosts, which sizes prefill."""

from __future__ import annotations

from dataclasses import dataclass, field

from workers.planner import MIN_CHUNK, StepCosts, plan_step
from workers.sequence import Status

GENERATING, PREFILLING, WAITING = Status.GENERATING, Status.PREFILLING, Status.WAITING

BIG = 10_000


@dataclass(eq=False)
class Seq:
    """A stand-in sequence: its tokens, how many are in the KV cache, and its status."""
    tokens: list[int] = field(default_factory=list)
    n_computed: int = 0
    status: Status = PREFILLING
    image_starts: list[int] = field(default_factory=list)
    draft: list[int] = field(default_factory=list)


def generating(n_computed: int, token: int) -> Seq:
    return Seq(tokens=[*range(n_computed), token], n_computed=n_computed, status=GENERATING)


def prompt(length: int, n_computed: int = 0, start: int = 100) -> Seq:
    return Seq(tokens=list(range(start, start + length)), n_computed=n_computed)


def plan(seqs: list[Seq], budget: int, prefill: int = BIG) -> list:
    return plan_step(seqs, budget, prefill)


def test_generating_sequences_add_their_pending_token_with_logits_at_its_position() -> None:
    a, b = generating(7, token=42), generating(3, token=43)
    works = plan([a, b], budget=512)
    assert [(w.seq, w.tokens, w.pos, w.logits) for w in works] == [(a, [42], 7, True),
                                                                  (b, [43], 3, True)]


def test_generating_sequences_come_before_any_prompt_even_if_they_arrived_later() -> None:
    waiting_prompt, gen = prompt(5), generating(10, token=9)
    assert [w.seq for w in plan([waiting_prompt, gen], budget=512)] == [gen, waiting_prompt]


def test_a_prefill_chunk_stops_where_an_image_starts_and_takes_no_logits() -> None:
    seq = Seq(tokens=[*range(10), *[-7] * 16, *range(5)], image_starts=[10])
    [work] = plan([seq], budget=512)
    assert (work.tokens, work.pos, work.logits) == (list(range(10)), 0, False)


def test_a_sequence_at_an_image_start_waits_for_the_engine_to_decode_the_image() -> None:
    assert plan([Seq(tokens=[1, 2, *[-7] * 16, 3], n_computed=2, image_starts=[2])],
                budget=512) == []


def test_after_its_image_a_prompt_goes_on_to_its_last_token_with_logits() -> None:
    seq = Seq(tokens=[1, 2, *[-7] * 16, 3, 4], n_computed=18, image_starts=[2])
    [work] = plan([seq], budget=512)
    assert (work.tokens, work.pos, work.logits) == ([3, 4], 18, True)


def test_a_draft_rides_after_the_pending_token_and_counts_against_the_prompts_room() -> None:
    gen = Seq(tokens=[1, 2, 3], n_computed=2, status=GENERATING, draft=[7, 8])
    works = plan([gen, prompt(100)], budget=10)
    assert (works[0].tokens, works[0].pos, works[0].drafted) == ([3, 7, 8], 2, 2)
    assert len(works[1].tokens) == 7


def test_waiting_sequences_take_no_part() -> None:
    waiting = Seq(tokens=[1, 2, 3], status=WAITING)
    assert plan([waiting], budget=512) == []


def test_prompts_share_the_room_fairly_so_a_long_one_cannot_starve_a_short_one() -> None:
    long, short = prompt(1000, start=0), prompt(40, start=5000)
    works = plan([long, short], budget=128)
    taken = {id(w.seq): len(w.tokens) for w in works}
    assert taken[id(short)] == 40  # done in this step although the long one arrived first
    assert taken[id(long)] == 88  # and what the short one left goes to the long one
    assert next(w for w in works if w.seq is short).logits is True


def test_leftover_room_goes_to_the_oldest_prompt_first() -> None:
    older, newer = prompt(100, start=0), prompt(100, start=500)
    works = plan([older, newer], budget=100)
    assert [len(w.tokens) for w in works] == [50, 50]
    works = plan([older, newer, prompt(1, start=900)], budget=101)
    assert [len(w.tokens) for w in works] == [33 + 34, 33, 1]  # shares of 33; 34 left over


def test_a_share_is_never_below_the_minimum_chunk() -> None:
    prompts = [prompt(100, start=1000 * i) for i in range(10)]
    works = plan(prompts, budget=64)
    assert [len(w.tokens) for w in works] == [MIN_CHUNK] * 4


def test_the_prefill_budget_caps_prompts_but_not_generating_tokens() -> None:
    gens = [generating(5, token=t) for t in range(3)]
    long = prompt(500)
    works = plan([*gens, long], budget=512, prefill=20)
    assert [len(w.tokens) for w in works] == [1, 1, 1, 20]


def test_only_the_chunk_that_completes_the_tokens_asks_for_logits() -> None:
    unfinished, finished = prompt(100, start=100), prompt(4, start=900)
    works = plan([finished, unfinished], budget=40)
    by_seq = {id(w.seq): w for w in works}
    assert by_seq[id(finished)].logits is True
    assert by_seq[id(unfinished)].logits is False


def test_a_prompt_larger_than_the_budget_is_split_across_steps() -> None:
    seq = prompt(10, start=100)
    chunks = []
    while works := plan([seq], budget=4):
        (work,) = works
        chunks.append((work.tokens, work.pos, work.logits))
        seq.n_computed += len(work.tokens)  # what the engine does once the batch is decoded
    assert chunks == [([100, 101, 102, 103], 0, False),
                      ([104, 105, 106, 107], 4, False),
                      ([108, 109], 8, True)]


def test_a_partly_cached_prompt_continues_from_what_is_computed() -> None:
    (work,) = plan([prompt(10, n_computed=6, start=100)], budget=512)
    assert (work.tokens, work.pos, work.logits) == ([106, 107, 108, 109], 6, True)


def test_a_preempted_sequence_recomputes_its_tokens_and_samples_after_the_last() -> None:
    resumed = Seq(tokens=[5, 6, 7, 8], n_computed=0, status=PREFILLING)  # 8: its pending token
    (work,) = plan([resumed], budget=512)
    assert (work.tokens, work.pos, work.logits) == ([5, 6, 7, 8], 0, True)


def test_prompts_get_nothing_when_generating_sequences_fill_the_budget() -> None:
    gens = [generating(2, token=t) for t in range(3)]
    assert [w.seq for w in plan([prompt(5), *gens], budget=3)] == gens


def test_nothing_to_do_gives_an_empty_plan() -> None:
    assert plan([], budget=512) == []


def test_step_costs_give_the_whole_cap_until_measured_or_when_nothing_decodes() -> None:
    costs = StepCosts()
    assert costs.prefill_budget(512, generating=1, waiting=1) == 512
    costs.record(decoded=4, prefilled=0, ns=20_000_000)
    costs.record(decoded=0, prefilled=100, ns=100_000_000)
    assert costs.prefill_budget(512, generating=0, waiting=1) == 512


def test_step_costs_size_prefill_to_about_one_decode_step_more() -> None:
    costs = StepCosts()
    costs.record(decoded=4, prefilled=0, ns=30_000_000)  # a decode step: 30 ms
    costs.record(decoded=0, prefilled=100, ns=100_000_000)  # a prefill token: 1 ms
    assert costs.prefill_budget(512, generating=4, waiting=1) == 30
    assert costs.prefill_budget(512, generating=4, waiting=4) == 30


def test_step_costs_give_a_burst_of_prompts_one_decode_step_each() -> None:
    """15 requests that came with one already running: not 16 tokens a step, seconds to a
    first token, but about 15 decode steps' worth."""
    costs = StepCosts()
    costs.record(decoded=1, prefilled=0, ns=15_000_000)
    costs.record(decoded=0, prefilled=100, ns=100_000_000)
    assert costs.prefill_budget(512, generating=1, waiting=15) == 225
    assert costs.prefill_budget(512, generating=2, waiting=15) == 112
    assert costs.prefill_budget(100, generating=1, waiting=15) == 100


def test_step_costs_learn_nothing_from_mixed_or_small_prefill_steps() -> None:
    costs = StepCosts()
    costs.record(decoded=4, prefilled=0, ns=30_000_000)
    costs.record(decoded=0, prefilled=100, ns=100_000_000)
    costs.record(decoded=4, prefilled=16, ns=90_000_000)  # small chunks cost more per token
    costs.record(decoded=0, prefilled=16, ns=60_000_000)
    assert costs.prefill_budget(512, generating=4, waiting=1) == 30


def test_step_costs_never_give_less_than_the_minimum_chunk() -> None:
    costs = StepCosts()
    costs.record(decoded=1, prefilled=0, ns=1_000)
    costs.record(decoded=0, prefilled=100, ns=100_000_000)
    assert costs.prefill_budget(512, generating=1, waiting=1) == MIN_CHUNK

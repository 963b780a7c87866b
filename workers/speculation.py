"""Speculative decoding inside the continuous batch: by prompt lookup, or by a draft model.

An answer often repeats spans of its prompt or of itself (edited code, summaries, extraction,
answers from retrieved text). When the last few tokens of a sequence occurred before, the tokens
that followed them then are a cheap guess (a draft) at what follows now: no second model. A
model created with a draft model (a smaller one of the same vocabulary) guesses with that instead
(workers/draft_model.py), up to the request's `draft_num_predict` tokens, at the cost of its
decodes, which the plan counts. The drafts ride in the step's one `llama_decode` after the
sequence's pending token, each with its logits; the batcher samples at each position in turn
with the sequence's own sampler chain and keeps drafts while they equal what it samples, so the
answer is the one plain decoding would give, at up to 1 + len(draft) tokens per step. What a rejected draft wrote into the KV cache is
removed.

A draft pays only if verifying it costs less than the steps it saves, and what a wider batch
costs depends on the machine: a GPU decodes a few more tokens for almost nothing, a CPU running a
small model (whose output layer over a 262k vocabulary is most of the work) pays nearly per token.
So the batcher measures, at load, what a decode of n tokens costs (`calibrate`), each sequence
keeps a running estimate of how much of its drafts is accepted, and a step takes a draft only
where the tokens it is expected to gain per unit of cost beat the step without it (`plan_drafts`).

The answer stays the one plain decoding gives only if every row of the batch is computed as it
would have been: ggml's CPU matrix kernels for quantized weights switch from one row at a time to
a 4-row GEMM, with other rounding, once a batch has 4 tokens (measured: the same token's logits
move by ~0.015 and a greedy answer turns within a few tokens). So a batch that would hold fewer
than 4 tokens is filled to 3 at most; one that holds 4 or more already mixes its rows' rounding
by what else runs (as continuous batching always does; CORRAL_BATCH_INVARIANT is the mode that
gives the same numbers whatever runs, and it does not speculate).

That holds bit for bit only while the cache's view is under 512 cells (its cells in use reach
no further than 256). From 512 on, llama.cpp's CPU flash attention splits a lone token's
attention across the threads and adds the parts, while 2 or more tokens are each computed in
one pass: measured at 600 cells, a drafted token's logits differ from its plain decode's by
0.05-0.5. A greedy or seeded answer then turns only where its top tokens are that close (a
984-token prompt repeated for 96 tokens came out the same with 114 drafts kept), and only under
`always`: on a CPU `auto` takes no draft (above).
"""

from __future__ import annotations

from dataclasses import dataclass, field

NGRAM_LONGEST, NGRAM_SHORTEST = 3, 2  # the tail looked up, longest first
MAX_DRAFT = 8  # tokens one draft holds at most
EXACT_BATCH = 3  # tokens a batch may hold with every row rounded as a lone token's
# Generating tokens a step may hold with its drafts once the batch is past EXACT_BATCH: beyond it
# the batch is wide enough that a wrong draft costs a real share of the step.
STEP_TOKENS = 16
PRIOR_ACCEPTANCE = 0.5  # a new sequence's expected share of a draft kept
SMOOTHING = 0.3  # weight of the latest draft in a sequence's acceptance estimate
CALIBRATION_SIZES = (1, 2, 3, 4, 8, 16)  # batch sizes whose decode is timed at load


class NgramIndex:
    """Where each short n-gram of a token list last ended, kept as the list grows, so a lookup is
    a dict read rather than a scan of the history."""

    def __init__(self) -> None:
        self._ends: dict[tuple[int, ...], int] = {}
        self._seen = 0  # tokens indexed

    def draft(self, tokens: list[int], limit: int) -> list[int]:
        """Up to `limit` tokens that followed the latest earlier occurrence of the list's tail
        (a sequence's history: prompt and answer); [] when the tail never occurred."""
        self._index(tokens)
        for n in range(NGRAM_LONGEST, NGRAM_SHORTEST - 1, -1):
            end = self._ends.get(tuple(tokens[-n:])) if len(tokens) > n else None
            if end is not None:
                guess = tokens[end:end + limit]
                # An image's placeholders (negative ids) can never be drafted.
                return guess[:next((i for i, t in enumerate(guess) if t < 0), len(guess))]
        return []

    def _index(self, tokens: list[int]) -> None:
        """Indexes every n-gram that ends before the last token (the tail must find an earlier
        occurrence, not itself)."""
        for end in range(max(self._seen, NGRAM_SHORTEST), len(tokens)):
            for n in range(NGRAM_SHORTEST, NGRAM_LONGEST + 1):
                if end >= n:
                    self._ends[tuple(tokens[end - n:end])] = end
        self._seen = max(self._seen, len(tokens))


@dataclass
class Drafter:
    """One sequence's drafting: its index and how much of its drafts has been kept."""

    index: NgramIndex = field(default_factory=NgramIndex)
    acceptance: float = PRIOR_ACCEPTANCE  # running estimate of the share of a draft kept
    drafted: int = 0
    accepted: int = 0

    def draft(self, tokens: list[int], limit: int) -> list[int]:
        return self.index.draft(tokens, limit) if limit > 0 else []

    def record(self, drafted: int, accepted: int) -> None:
        self.drafted += drafted
        self.accepted += accepted
        self.acceptance += SMOOTHING * (accepted / drafted - self.acceptance)


def expected_tokens(acceptance: float, length: int) -> float:
    """Tokens a step gives a sequence that drafts `length`: its own, and each drafted token
    kept while all before it were (1 + a + a^2 + ... + a^length)."""
    return sum(acceptance ** i for i in range(length + 1))


class Costs:
    """What a decode of n tokens costs, measured at load for a few sizes, between them linear."""

    def __init__(self, measured: dict[int, float]) -> None:
        self._points = sorted(measured.items())

    def __call__(self, n: int) -> float:
        points = self._points
        for (n0, c0), (n1, c1) in zip(points, points[1:]):
            if n <= n1:
                return c0 + (c1 - c0) * (n - n0) / (n1 - n0)
        (n0, c0), (n1, c1) = points[-2], points[-1]
        return c1 + (c1 - c0) * (n - n1) / (n1 - n0)


FREE = Costs({1: 1.0, 2: 1.0})  # CORRAL_SPECULATIVE=always: a draft costs nothing


def plan_drafts(generating: int, offers: list[tuple[float, int]], cost: Costs,
                room: int, draft_cost: float = 0.0) -> list[int]:
    """How long a draft each offering sequence takes this step: offers are (acceptance, longest
    draft it may have), in order; a draft is taken, at the length that serves best, only if it
    raises the step's expected tokens per unit of cost. `generating` tokens are in the step
    anyway; a step below 4 tokens stays at EXACT_BATCH (see above), a wider one at STEP_TOKENS;
    `room`: draft tokens the batch and the free KV cells take at most; `draft_cost`: what
    making one draft token costs (a draft model's decode; a lookup's is nothing)."""
    cap = EXACT_BATCH if generating <= EXACT_BATCH else max(STEP_TOKENS, generating)
    cap = min(cap, generating + room)
    tokens, gained, drafting = generating, float(generating), 0.0
    taken = []
    for acceptance, longest in offers:
        best, best_rate = 0, gained / (cost(tokens) + drafting)
        for length in range(1, min(longest, cap - tokens) + 1):
            spent = cost(tokens + length) + drafting + length * draft_cost
            rate = (gained + expected_tokens(acceptance, length) - 1) / spent
            if rate > best_rate:
                best, best_rate = length, rate
        taken.append(best)
        tokens += best
        gained += expected_tokens(acceptance, best) - 1
        drafting += best * draft_cost
    return taken

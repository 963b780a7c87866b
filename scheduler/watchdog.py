"""How long a worker may stay silent before it counts as hung: a pure function of its step times.

A worker answers a ping between two engine steps, and sends a Step message after each, so while
it has requests in flight silence means a step is running. A step holds at most STEP_TOKENS
tokens, and a token in a batch costs no more than a token decoded alone (batching only shares
the reading of the weights), so the typical (median) recent cost of a token, times a full step,
bounds the next step; SAFETY times the longest recent step covers the outliers (a warm-up, a
busy machine). The median, not the costliest token: one slow warm-up step would otherwise set
a deadline of minutes. Measured on Gemma 3 270M on a busy 2-core CPU: decode steps ~50 ms, a
512-token prompt step 2.2-3.4 s, so a deadline of ~26 s. A model that has not stepped yet (its
first prompt) gets the configured ceiling, as does an idle worker.
"""

from __future__ import annotations

from statistics import median
from typing import Sequence

FLOOR = 5.0  # seconds: never tighter (a page-in of weights, a scheduling hiccup)
INTERVAL = 1.0  # seconds between pings, and between looks at a ping not yet answered
SAFETY = 4
STEP_TOKENS = 512  # the most tokens one step decodes (workers/llm.py BATCH_TOKENS)

StepTime = tuple[int, int]  # (duration in ns, tokens decoded)


def step_deadline(steps: Sequence[StepTime], ceiling: float) -> float:
    """Seconds one model's next step may take, from its recent steps."""
    if not steps:
        return ceiling
    longest = max(duration for duration, _ in steps) / 1e9
    per_token = median(duration / max(1, tokens) for duration, tokens in steps) / 1e9
    return min(ceiling, max(FLOOR, SAFETY * longest, per_token * STEP_TOKENS))


def silence_deadline(busy_models: Sequence[Sequence[StepTime]], ceiling: float) -> float:
    """Seconds a worker may go without a message: the slowest of its busy models' next steps
    (models step one after another, but a ping waits for at most the step in progress)."""
    return max((step_deadline(steps, ceiling) for steps in busy_models), default=ceiling)

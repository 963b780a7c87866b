"""How long a worker may stay silent before it counts as hung: a pure function of its step times.

A worker answers a ping between two engine steps, and sends a Step message after each, so while
it has requests in flight silence means a step is running. A step holds at most STEP_TOKENS
tokens, and a token of prompt costs no more than a token decoded alone (batching only makes
tokens cheaper), so the costliest token seen recently, times a full step, bounds the next step;
SAFETY times the longest recent step covers a step that grew with the context. A model that has
not stepped yet (its first prompt) gets the configured ceiling, as does an idle worker.
"""

from __future__ import annotations

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
    per_token = max(duration / max(1, tokens) for duration, tokens in steps) / 1e9
    return min(ceiling, max(FLOOR, SAFETY * longest, per_token * STEP_TOKENS))


def silence_deadline(busy_models: Sequence[Sequence[StepTime]], ceiling: float) -> float:
    """Seconds a worker may go without a message: the slowest of its busy models' next steps
    (models step one after another, but a ping waits for at most the step in progress)."""
    return max((step_deadline(steps, ceiling) for steps in busy_models), default=ceiling)

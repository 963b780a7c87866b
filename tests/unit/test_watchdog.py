"""The hang deadline: how long a worker may stay silent, from its recent step times."""

from __future__ import annotations

import pytest

from scheduler.watchdog import silence_deadline, step_deadline

MS = 1_000_000  # ns
CEILING = 300.0


@pytest.mark.parametrize("steps,deadline", [
    ([], CEILING),
    ([(50 * MS, 1)] * 5, 25.6),
    ([(5 * MS, 8)] * 5, 5.0),
    ([(3000 * MS, 512), (50 * MS, 1), (50 * MS, 1)], 25.6),
    ([(600 * MS, 1), (50 * MS, 1), (50 * MS, 1)], 25.6),
    ([(1000 * MS, 1)], CEILING),
], ids=["no steps yet: the ceiling", "a full step of tokens at the median token's cost",
        "never below the floor", "decode tokens bound a prompt step",
        "one slow warm-up step does not set it", "never above the ceiling"])
def test_step_deadline(steps: list[tuple[int, int]], deadline: float) -> None:
    assert step_deadline(steps, CEILING) == pytest.approx(deadline)


def test_four_times_the_longest_step_when_that_is_more() -> None:
    assert step_deadline([(5000 * MS, 512)], CEILING) == pytest.approx(20.0)


def test_a_worker_waits_for_its_slowest_busy_model() -> None:
    fast, slow = [(10 * MS, 1)], [(100 * MS, 1)]
    assert silence_deadline([fast, slow], CEILING) == pytest.approx(51.2)


def test_a_busy_model_without_steps_gives_the_ceiling() -> None:
    assert silence_deadline([[(10 * MS, 1)], []], CEILING) == CEILING


def test_an_idle_worker_gets_the_ceiling() -> None:
    assert silence_deadline([], CEILING) == CEILING

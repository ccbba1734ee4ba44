"""The spawn budget, pure: a token bucket (the rate and the batch) and a bound on the children still in their
start, with a fake clock."""

from __future__ import annotations

from pipelex_pool.supervisor.spawning.budget import IN_START_WINDOW_S, SpawnBudget


def test_the_rate_and_the_batch_cap_starts() -> None:
    budget = SpawnBudget(rate=4, batch=2)
    assert [budget.take(0.0) for _ in range(3)] == [True, True, False]
    assert budget.next_at(0.0) == 0.25  # one token refilled at 4 per second
    assert budget.take(0.25)
    assert not budget.take(0.25)


def test_a_start_is_held_while_the_bound_is_reached_and_goes_once_one_is_through() -> None:
    budget = SpawnBudget(rate=1000, batch=10, in_start=2)
    starting = [0.0, 0.1]  # when each child still in its start was started
    assert not budget.take(0.2, starting)
    assert budget.take(0.2, starting[1:])  # one got through (READY, or waiting for Temporal): the next goes


def test_a_child_starting_for_longer_than_the_window_holds_nothing_back() -> None:
    budget = SpawnBudget(rate=1000, batch=10, in_start=2)
    starting = [0.0, 1.0]
    assert not budget.take(1.5, starting)
    assert budget.next_at(1.5, starting) == IN_START_WINDOW_S  # when the oldest leaves the window
    assert budget.take(IN_START_WINDOW_S, starting)


def test_without_a_bound_only_the_tokens_count() -> None:
    budget = SpawnBudget(rate=1000, batch=3)
    assert all(budget.take(0.0, [0.0] * 50) for _ in range(3))

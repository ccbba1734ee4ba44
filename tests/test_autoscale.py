"""The autoscaler's decision (pure, fake clock): up at once, down after a cooldown, a fleet's share."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

from pipelex_pool.supervisor.watchers.autoscale import AutoscaleState, decide, share, wanted
from pipelex_pool.topology.schema import Autoscale

CONFIG = Autoscale(min=1, max=6, target_backlog_per_replica=10, cooldown=timedelta(seconds=30))


def test_up_at_once_down_only_after_a_whole_cooldown() -> None:
    state = AutoscaleState(desired=1)
    assert decide(state, 45, 1, CONFIG, now=0.0) == 5
    assert decide(state, 0, 5, CONFIG, now=10.0) == 5 and "cooldown" in state.reason
    assert decide(state, 0, 5, CONFIG, now=39.0) == 5
    assert decide(state, 0, 5, CONFIG, now=41.0) == 1 and "(down)" in state.reason


@pytest.mark.parametrize("pools", [1, 2, 3, 4])
@pytest.mark.parametrize("backlog", [0, 1, 9, 10, 11, 35, 59, 60, 1000])
def test_a_fleet_s_pools_together_run_about_what_one_pool_would(pools: int, backlog: int) -> None:
    alone = wanted(backlog, CONFIG)
    together = pools * share(backlog, CONFIG, pools)
    assert alone <= together <= alone + pools - 1  # never `pools` times as many
    assert share(backlog, CONFIG, pools) == math.ceil(alone / pools)


def test_the_share_is_in_the_decision_and_its_reason() -> None:
    state = AutoscaleState(desired=1)
    assert decide(state, 1000, 1, CONFIG, now=0.0, pools=2) == 3
    assert "1/2 of the fleet's" in state.reason

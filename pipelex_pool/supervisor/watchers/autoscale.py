"""Autoscaling decisions (pure): replicas follow the queue backlog within [min, max]."""

from __future__ import annotations

import math
from dataclasses import dataclass

from pipelex_pool.topology.schema import Autoscale


@dataclass
class AutoscaleState:
    """What the autoscaler last decided for one group, and when the replicas last changed."""

    desired: int
    backlog: int = 0
    reason: str = ""
    changed_at: float = 0.0
    low_since: float | None = None  # since when the backlog has asked for fewer replicas
    busy_since: float | None = None  # since when a decided scale-down waits for busy replicas to finish


def wanted(backlog: int, config: Autoscale) -> int:
    """clamp(ceil(backlog / target_backlog_per_replica), min, max)."""
    return min(config.max, max(config.min, math.ceil(backlog / config.target_backlog_per_replica)))


def share(backlog: int, config: Autoscale, pools: int) -> int:
    """This pool's part of what one pool would want, in a fleet of `pools` live pools: ceil(wanted / pools).
    Together they run at most pools - 1 replicas more than one pool would, never pools times as many."""
    return math.ceil(wanted(backlog, config) / max(1, pools))


def decide(state: AutoscaleState, backlog: int, current: int, config: Autoscale, now: float, pools: int = 1) -> int:
    """The replicas to run: up at once; down only once the backlog has asked for less for a whole cooldown.
    In a fleet of `pools` live pools, this pool's share of it."""
    target = share(backlog, config, pools)
    fleet = f" (this pool's share: 1/{pools} of the fleet's)" if pools > 1 else ""
    state.backlog = backlog
    cooldown = config.cooldown.total_seconds()
    if target > current:
        state.low_since = None
        state.changed_at = now
        state.reason = f"backlog {backlog} / target {config.target_backlog_per_replica} -> {target} (up){fleet}"
        state.desired = target
    elif target < current and state.desired < current:  # a scale-down already decided: busy replicas finish first
        state.desired = max(state.desired, target)
        state.reason = f"backlog {backlog} -> {state.desired} (down, under way){fleet}"
    elif target < current:
        if state.low_since is None:
            state.low_since = now
        if now - state.low_since >= cooldown and now - state.changed_at >= cooldown:
            state.reason = (
                f"backlog {backlog} for {now - state.low_since:.0f}s (cooldown {cooldown:g}s) -> {target} (down){fleet}"
            )
            state.desired = target
            state.changed_at = now
            state.low_since = None
        else:
            state.reason = f"backlog {backlog} asks for {target}; waiting out the cooldown ({cooldown:g}s)"
    else:
        state.low_since = None
        state.reason = f"backlog {backlog} -> {target} (steady){fleet}"
    return state.desired


def retire_idle_only(state: AutoscaleState, current: int, idle: int, busy_wait: float, now: float) -> int:
    """The replicas to run now, given the decided `state.desired`: a scale-down takes the `idle` replicas (no
    attempt in flight) at once and lets the busy ones finish theirs, for `busy_wait` seconds at most."""
    goal = state.desired
    if goal >= current:
        state.busy_since = None
        return goal
    now_possible = max(goal, current - idle)
    if now_possible == goal:
        state.busy_since = None
        return goal
    if state.busy_since is None:
        state.busy_since = now
    waited = now - state.busy_since
    if waited >= busy_wait:
        state.busy_since = None
        state.reason += f"; busy replicas drained after waiting {busy_wait:g}s (busy_wait)"
        return goal
    busy = now_possible - goal
    state.reason += f"; {busy} busy replica(s) finish their attempts first ({waited:.0f}s of busy_wait {busy_wait:g}s)"
    return now_possible

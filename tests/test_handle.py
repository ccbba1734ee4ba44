"""The replica state machine with a fake clock: tables of event histories and what each step must produce."""

from __future__ import annotations

import random
import signal
from datetime import timedelta
from typing import Any

import pytest

from pipelex_pool.supervisor.process.handle import Action, HandleTimings, ProcessHandle
from pipelex_pool.supervisor.process.policy import RestartPolicy
from pipelex_pool.supervisor.process.state import ExitStatus, ProcState
from pipelex_pool.topology.schema import RestartConfig

S = ProcState
SPAWN, TERM, KILL = Action.SPAWN, Action.TERMINATE, Action.KILL


class NoJitter(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return 1.0


def make_handle(**restart: Any) -> ProcessHandle:
    config = RestartConfig(
        **{
            "backoff_initial": timedelta(seconds=1),
            "backoff_max": timedelta(seconds=8),
            "backoff_factor": 2.0,
            "stable_after": timedelta(seconds=30),
            "max_restarts": 5,
            "window": timedelta(seconds=60),
            **restart,
        }
    )
    return ProcessHandle(
        "llm", 0, RestartPolicy(config, NoJitter()), HandleTimings(start_timeout=10, stop_timeout=15, watchdog=5)
    )


def apply(handle: ProcessHandle, event: tuple[Any, ...]) -> list[Action]:
    kind, now, *args = event
    if kind == "start":
        return handle.start(now)
    if kind == "spawned":
        handle.spawned(args[0] if args else 1000)
        return []
    if kind == "ready":
        handle.ready(now)
        return []
    if kind == "watchdog":
        handle.watchdog_ping(now)
        return []
    if kind == "exit":
        return handle.exited(ExitStatus.from_returncode(args[0]), now)
    if kind == "tick":
        return handle.tick(now)
    if kind == "stop":
        return handle.stop(now)
    if kind == "restart":
        return handle.stop(now, restart=True)
    if kind == "revive":
        return handle.revive(now)
    if kind == "spawn_failed":
        return handle.spawn_failed("no such file", now)
    raise AssertionError(kind)


def up(at: float) -> list[tuple[tuple[Any, ...], ProcState, list[Action]]]:
    """start, spawned, ready at `at`."""
    return [(("start", at), S.STARTING, [SPAWN]), (("spawned", at), S.STARTING, []), (("ready", at), S.READY, [])]


def young_death(at: float, delay: float, code: int = 1) -> list[tuple[tuple[Any, ...], ProcState, list[Action]]]:
    """exit at `at` before READY, BACKOFF for `delay`, nothing just before, started again exactly at the end."""
    return [
        (("exit", at, code), S.BACKOFF, []),
        (("tick", at + delay - 0.01), S.BACKOFF, []),
        (("tick", at + delay), S.STARTING, [SPAWN]),
    ]


def ran_death(at: float, code: int = 1) -> list[tuple[tuple[Any, ...], ProcState, list[Action]]]:
    """exit at `at` after READY for at least min_uptime: started again at the same instant, READY."""
    return [(("exit", at, code), S.BACKOFF, []), (("tick", at), S.STARTING, [SPAWN]), (("ready", at), S.READY, [])]


STARTED = [(("start", 0), S.STARTING, [SPAWN])]

HISTORIES: dict[str, tuple[dict[str, Any], list[tuple[tuple[Any, ...], ProcState, list[Action]]]]] = {
    "start-ready-stop": ({}, [*up(0), (("stop", 5), S.STOPPING, [TERM]), (("exit", 6, 0), S.STOPPED, [])]),
    "backoff-doubles-to-the-cap": (
        {"max_restarts": 10},
        [
            *STARTED,
            *young_death(1, 1),  # delays 1, 2, 4, 8, then capped at 8
            *young_death(3, 2),
            *young_death(6, 4),
            *young_death(11, 8),
            *young_death(20, 8),
        ],
    ),
    "fatal-after-max-restarts-young-deaths-in-window": (
        {"max_restarts": 2},
        [*STARTED, *young_death(1, 1), *young_death(3, 2), (("exit", 6, 1), S.FATAL, []), (("tick", 100), S.FATAL, [])],
    ),
    "young-deaths-spread-beyond-the-window-are-forgiven": (
        {"max_restarts": 1, "window": timedelta(seconds=5)},
        [*STARTED, *young_death(1, 1), *young_death(10, 2), *young_death(20, 4)],
    ),
    "a-replica-that-ran-restarts-at-once": ({}, [*up(0), *ran_death(5), *ran_death(7), *ran_death(9)]),
    "deaths-of-replicas-that-ran-never-go-fatal": (
        {"max_restarts": 0},
        [*up(0), *(row for t in range(2, 40, 2) for row in ran_death(t)), (("exit", 38.5, 1), S.FATAL, [])],
    ),
    "dying-within-min-uptime-of-ready-is-young": (
        {},
        [
            *up(0),
            (("exit", 0.5, 1), S.BACKOFF, []),
            (("tick", 1.49), S.BACKOFF, []),
            (("tick", 1.5), S.STARTING, [SPAWN]),
        ],
    ),
    "backoff-starts-again-from-the-initial-delay-after-a-run": (
        {},
        [
            *STARTED,
            *young_death(1, 1),
            *young_death(3, 2),
            (("ready", 5), S.READY, []),
            *ran_death(10),
            *young_death(10.5, 1),
        ],
    ),
    "stable-uptime-forgets-earlier-young-deaths": (
        {"max_restarts": 2},
        [
            *STARTED,
            *young_death(1, 1),
            *young_death(3, 2),
            (("ready", 5), S.READY, []),
            *ran_death(40),  # READY 35 s >= stable_after: the two young deaths are forgiven
            *young_death(40.5, 1),
            *young_death(42, 2),  # 4 young deaths within 60 s, but only 2 since the stable run: not FATAL
        ],
    ),
    "a-short-run-keeps-earlier-young-deaths": (
        {"max_restarts": 2},
        [
            *STARTED,
            *young_death(1, 1),
            *young_death(3, 2),
            (("ready", 5), S.READY, []),
            *ran_death(10),  # READY 5 s: it ran (no backoff), but young deaths stay counted
            (("exit", 10.5, 1), S.FATAL, []),  # the third young death within 60 s
        ],
    ),
    "exit-78-is-fatal-at-once": ({}, [*up(0), (("exit", 1, 78), S.FATAL, [])]),
    "on-failure-leaves-a-clean-exit-alone": ({"policy": "on-failure"}, [*up(0), (("exit", 1, 0), S.EXITED, [])]),
    "always-restarts-a-clean-exit": ({"policy": "always"}, [*STARTED, *young_death(1, 1, code=0)]),
    "never-restarts-nothing": (
        {"policy": "never"},
        [*up(0), (("exit", 1, 1), S.EXITED, []), (("tick", 50), S.EXITED, [])],
    ),
    "start-timeout-kills-and-counts-a-failure": (
        {"policy": "on-failure"},
        [
            (("start", 0), S.STARTING, [SPAWN]),
            (("tick", 9.9), S.STARTING, []),
            (("tick", 10), S.STOPPING, [KILL]),
            (("exit", 10.1, -signal.SIGKILL), S.BACKOFF, []),
            (("tick", 11.1), S.STARTING, [SPAWN]),
        ],
    ),
    "missed-watchdog-kills-and-restarts": (
        {},
        [
            *up(0),
            (("watchdog", 4), S.READY, []),
            (("tick", 8.9), S.READY, []),  # the ping at 4 moved the deadline to 9
            (("tick", 9), S.STOPPING, [KILL]),
            (("exit", 9.1, -signal.SIGKILL), S.BACKOFF, []),
            (("tick", 9.1), S.STARTING, [SPAWN]),  # it had been READY for 9 s: not a young death
        ],
    ),
    "drain-past-its-deadline-is-killed": (
        {},
        [
            *up(0),
            (("stop", 1), S.STOPPING, [TERM]),
            (("tick", 15.9), S.STOPPING, []),
            (("tick", 16), S.STOPPING, [KILL]),
            (("tick", 17), S.STOPPING, []),
            (("exit", 17, -signal.SIGKILL), S.STOPPED, []),
        ],
    ),
    "stop-during-backoff-cancels-the-restart": (
        {},
        [*up(0), (("exit", 1, 1), S.BACKOFF, []), (("stop", 1.5), S.STOPPED, []), (("tick", 10), S.STOPPED, [])],
    ),
    "restart-drains-then-starts-again": (
        {},
        [
            *up(0),
            (("restart", 5), S.STOPPING, [TERM]),
            (("exit", 6, 0), S.STARTING, [SPAWN]),
            (("ready", 7), S.READY, []),
        ],
    ),
    "restart-failed-revives-a-fatal-replica": (
        {"max_restarts": 0},
        [
            *STARTED,
            (("exit", 1, 1), S.FATAL, []),
            (("revive", 50), S.STARTING, [SPAWN]),
            (("exit", 52, 1), S.FATAL, []),
        ],
    ),
    "revive-ignores-a-healthy-replica": ({}, [*up(0), (("revive", 1), S.READY, [])]),
    "spawn-failure-backs-off": ({}, [(("start", 0), S.STARTING, [SPAWN]), (("spawn_failed", 0), S.BACKOFF, [])]),
    "start-twice-spawns-once": ({}, [(("start", 0), S.STARTING, [SPAWN]), (("start", 0.1), S.STARTING, [])]),
}


@pytest.mark.parametrize("name", list(HISTORIES))
def test_history(name: str) -> None:
    restart, history = HISTORIES[name]
    handle = make_handle(**restart)
    for step, (event, state, actions) in enumerate(history):
        got = apply(handle, event)
        assert (handle.state, got) == (state, actions), f"step {step} {event}: {handle.state} {got} ({handle.reason})"


def test_restart_count_counts_automatic_restarts_only() -> None:
    handle = make_handle()
    for event in [
        ("start", 0),
        ("ready", 0),
        ("exit", 1, 1),
        ("tick", 2),
        ("ready", 2),
        ("restart", 3),
        ("exit", 4, 0),
    ]:
        apply(handle, event)
    assert handle.restarts == 1


def test_exit_decoding() -> None:
    assert ExitStatus.from_returncode(-9).describe() == "SIGKILL (possibly out of memory)"
    assert ExitStatus.from_returncode(-15).describe() == "SIGTERM"
    assert ExitStatus.from_returncode(78).describe() == "exit 78 (configuration error)"
    assert ExitStatus.from_returncode(1).describe() == "exit 1"


def test_fatal_reason_names_the_threshold() -> None:
    handle = make_handle(max_restarts=0)
    for event in [("start", 0), ("exit", 1, 1)]:
        apply(handle, event)
    assert handle.state is S.FATAL and "max_restarts=0" in handle.reason and "exit 1" in handle.reason
    assert "never READY" in handle.reason


def test_jitter_stays_within_bounds() -> None:
    config = RestartConfig(backoff_initial=timedelta(seconds=1), backoff_max=timedelta(seconds=8))
    policy = RestartPolicy(config, random.Random(7))
    for attempt in range(1, 12):
        delays = [policy.backoff(attempt) for _ in range(50)]
        assert all(1.0 <= d <= 8.0 for d in delays)
    assert len({round(policy.backoff(2), 6) for _ in range(20)}) > 1  # jittered, not constant


def test_next_deadline_follows_the_state() -> None:
    handle = make_handle()
    handle.start(0)
    assert handle.next_deadline() == 10  # start timeout
    handle.ready(1)
    assert handle.next_deadline() == 6  # watchdog
    handle.exited(ExitStatus(code=1), 1.5)
    assert handle.next_deadline() == 2.5  # backoff: it died 0.5 s after READY, young

"""The reconcile loop driven step by step: a fake spawner (no process is started or signalled), a fake clock, real
notify sockets. Each scenario is a table of steps and what the pool must look like after each one."""

from __future__ import annotations

import shutil
import signal
import socket
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import pytest
from anyio import wait_all_tasks_blocked

from pipelex_pool.contract import NOTIFY_SOCKET_ENV
from pipelex_pool.errors import ErrorCode, RequestRefused
from pipelex_pool.packs import AppRef
from pipelex_pool.paths import PoolPaths
from pipelex_pool.supervisor.desired.requests import (
    Reload,
    Request,
    Restart,
    RestartFailed,
    Scale,
    SetStopped,
    Shutdown,
)
from pipelex_pool.supervisor.loop import Supervisor
from pipelex_pool.supervisor.spawning.budget import SpawnBudget
from pipelex_pool.supervisor.spawning.spawner import ChildSpec, Register
from pipelex_pool.topology.load import load_topology
from tests.topologies import write_topology

FAKE_PID_BASE = 5_000_000  # above Linux's pid_max: never a real process
BATCH = 2  # the spawn budget of these tests: 2 starts at once, 2 more per second


class FakeChild:
    """A process that exits when told to (or when the pool signals it), and speaks sd_notify on its socket."""

    def __init__(self, pid: int, spec: ChildSpec) -> None:
        self.pid, self.spec = pid, spec
        self.stdout = None
        self.returncode: int | None = None
        self._exited = anyio.Event()

    async def wait(self) -> int:
        await self._exited.wait()
        assert self.returncode is not None
        return self.returncode

    async def aclose(self) -> None:
        pass

    def exit(self, returncode: int) -> None:
        if self.returncode is None:
            self.returncode = returncode
            self._exited.set()

    def notify(self, *lines: str) -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto("\n".join(lines).encode(), self.spec.env[NOTIFY_SOCKET_ENV])


@dataclass
class FakeSpawner:
    children: dict[int, FakeChild] = field(default_factory=dict)
    signals: list[tuple[int, int]] = field(default_factory=list)
    failing: set[str] = field(default_factory=set)  # replica names whose spawn raises
    refreshed: int = 0
    exit_on_term: bool = True

    async def spawn(self, spec: ChildSpec, register: Register) -> FakeChild:
        if spec.name in self.failing:
            raise RuntimeError(f"cannot spawn {spec.name}")
        pid = FAKE_PID_BASE + len(self.children)
        register(pid)
        child = self.children[pid] = FakeChild(pid, spec)
        return child

    def refresh(self, preload: AppRef | None = None) -> None:
        self.refreshed += 1

    def own_pids(self) -> set[int]:
        return set()

    def signal(self, pid: int, signum: int) -> None:
        self.signals.append((pid, signum))
        if signum == signal.SIGKILL or self.exit_on_term:
            self.children[pid].exit(-signum if signum == signal.SIGKILL else 0)

    def reap_orphans(self, known: set[int]) -> list[int]:
        return []

    async def aclose(self) -> None:
        pass

    def alive(self, group: str | None = None) -> list[FakeChild]:
        return [
            c
            for c in self.children.values()
            if c.returncode is None and (group is None or c.spec.name.startswith(f"{group}/"))
        ]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Harness:
    supervisor: Supervisor
    spawner: FakeSpawner
    clock: Clock
    tg: Any
    answers: list[Any] = field(default_factory=list)
    most_alive: dict[str, int] = field(default_factory=dict)

    async def step(self) -> None:
        await anyio.sleep(0.005)  # one turn of the event loop's I/O poll: datagrams sent reach the observers
        await wait_all_tasks_blocked()  # observers have read what the children said
        await self.supervisor.step()
        await wait_all_tasks_blocked()
        for group in self.supervisor.groups:
            self.most_alive[group] = max(self.most_alive.get(group, 0), len(self.spawner.alive(group)))

    def request(self, request: Request) -> None:
        submitted = self.supervisor.request(request)

        async def collect() -> None:
            await submitted.applied.wait()
            self.answers.append(submitted.refused or submitted.answer)

        self.tg.start_soon(collect)

    def ready(self, group: str) -> None:
        for child in self.spawner.alive(group):
            child.notify("READY=1")

    def states(self, group: str) -> list[str]:
        return [h.state.value for h in self.supervisor.groups[group].handles]


@asynccontextmanager
async def make_harness(tmp_path: Path, budget: SpawnBudget | None = None) -> AsyncIterator[Harness]:
    """(Not a fixture: the task group must be entered and left in the test's own task.)"""
    changes = {"workers.router.replicas": 0, "workers.media.replicas": 0, "workers.llm.hand_back": False}
    topology = load_topology(write_topology(tmp_path, changes))  # (no hand-back: nothing here talks to Temporal)
    short = Path(tempfile.mkdtemp(prefix="pp-loop-", dir="/tmp"))  # AF_UNIX paths are short
    paths = PoolPaths(runtime_dir=short, socket=short / "control.sock", state_dir=tmp_path, log_dir=tmp_path)
    paths.notify_dir.mkdir()
    spawner, clock = FakeSpawner(), Clock()
    budget = budget or SpawnBudget(rate=2, batch=BATCH)
    supervisor = Supervisor(topology, paths, dev_server=False, spawner=spawner, clock=clock, budget=budget)
    async with anyio.create_task_group() as tg:
        supervisor.attach(tg)
        yield Harness(supervisor, spawner, clock, tg)
        for child in spawner.children.values():
            child.exit(0)
        tg.cancel_scope.cancel()
    supervisor.close()
    shutil.rmtree(short)


Step = tuple[str, Any]


async def run(h: Harness, steps: list[Step]) -> None:
    for number, (kind, arg) in enumerate(steps, 1):
        if kind == "request":
            h.request(arg)
        elif kind == "advance":
            h.clock.now += arg
        elif kind == "ready":
            h.ready(arg)
        elif kind == "step":
            for _ in range(arg):
                await h.step()
        elif kind == "exit":
            group, replica, code = arg
            pid = h.supervisor.groups[group].handles[replica].pid
            assert pid is not None, f"step {number}: {group}/{replica} has no process"
            h.spawner.children[pid].exit(code)
        elif kind == "exit_newest":
            h.spawner.children[max(h.spawner.children)].exit(arg)
        elif kind == "expect":
            check: Callable[[Harness], object] = arg
            assert check(h), f"step {number}: {getattr(check, '__doc__', None) or check}"
        else:
            raise AssertionError(f"unknown step {kind}")


def alive(group: str, n: int) -> Callable[[Harness], bool]:
    def check(h: Harness) -> bool:
        return len(h.spawner.alive(group)) == n

    check.__doc__ = f"{n} {group} process(es) alive"
    return check


def spawned(n: int) -> Callable[[Harness], bool]:
    def check(h: Harness) -> bool:
        return len(h.spawner.children) == n

    check.__doc__ = f"{n} process(es) spawned in all"
    return check


def most_alive(group: str, n: int) -> Callable[[Harness], bool]:
    def check(h: Harness) -> bool:
        return h.most_alive.get(group, 0) <= n

    check.__doc__ = f"never more than {n} {group} process(es) alive"
    return check


def states(group: str, *expected: str) -> Callable[[Harness], bool]:
    def check(h: Harness) -> bool:
        return h.states(group) == list(expected)

    check.__doc__ = f"{group} states are {list(expected)}"
    return check


def answered(predicate: Callable[[Any], bool], what: str) -> Callable[[Harness], bool]:
    def check(h: Harness) -> bool:
        return bool(h.answers) and predicate(h.answers[-1])

    check.__doc__ = f"the last answer {what}"
    return check


def refused(code: ErrorCode) -> Callable[[Harness], bool]:
    return answered(lambda a: isinstance(a, RequestRefused) and a.code is code, f"is a refusal {code.value}")


START_TWO: list[Step] = [
    ("step", 1),
    ("ready", "llm"),
    ("step", 1),
    ("expect", states("llm", "READY", "READY")),
    ("advance", 1.0),  # the spawn budget is full again
]

SCENARIOS: dict[str, list[Step]] = {
    "a mass spawn starts one batch per iteration, then the rest as the budget refills": [
        *START_TWO,
        ("request", Scale("llm", 40)),
        ("step", 1),
        ("expect", alive("llm", 2 + BATCH)),
        ("step", 3),  # no time passed: nothing more may start
        ("expect", alive("llm", 2 + BATCH)),
        ("advance", 1.0),
        ("step", 1),
        ("expect", alive("llm", 2 + BATCH + 2)),
    ],
    "scale down during a mass spawn: no replica starts after the request is applied": [
        *START_TWO,
        ("request", Scale("llm", 40)),
        ("step", 1),
        ("advance", 0.3),
        ("request", Scale("llm", 2)),
        ("step", 1),
        ("expect", alive("llm", 2)),
        ("advance", 5.0),
        ("step", 3),
        ("expect", spawned(2 + BATCH)),
        ("expect", most_alive("llm", 2 + BATCH)),
        ("expect", states("llm", "READY", "READY")),
    ],
    "down during a mass spawn stops everything at the next iteration": [
        *START_TWO,
        ("request", Scale("llm", 40)),
        ("step", 1),
        ("request", Shutdown("down")),
        ("step", 1),
        ("expect", alive("llm", 0)),
        ("advance", 5.0),
        ("step", 2),
        ("expect", spawned(2 + BATCH)),
        ("expect", lambda h: h.supervisor.shutting_down and not h.supervisor.groups["llm"].handles),
    ],
    "a request after down is refused, not lost": [
        *START_TWO,
        ("request", Shutdown("down")),
        ("step", 1),
        ("request", Scale("llm", 3)),
        ("step", 1),
        ("expect", refused(ErrorCode.STOPPING)),
    ],
    "the latest of two scale requests in one iteration wins": [
        *START_TWO,
        ("request", Scale("llm", 12)),
        ("request", Scale("llm", 1)),
        ("step", 1),
        ("expect", alive("llm", 1)),
        ("expect", spawned(2)),
    ],
    "scale over max_replicas is refused and changes nothing": [
        *START_TWO,
        ("request", Scale("llm", 100_000)),
        ("step", 1),
        ("expect", refused(ErrorCode.OVER_LIMIT)),
        ("expect", lambda h: h.supervisor.groups["llm"].desired == 2),
        ("expect", spawned(2)),
    ],
    "scale of an unknown group is refused naming the groups": [
        ("request", Scale("nosuch", 2)),
        ("step", 1),
        ("expect", answered(lambda a: isinstance(a, RequestRefused) and "llm" in a.message, "names llm")),
    ],
    "a roll replaces one replica at a time, each replacement READY first": [
        *START_TWO,
        ("request", Restart(("llm",))),
        ("step", 1),
        ("expect", lambda h: h.spawner.refreshed == 1),
        ("expect", alive("llm", 3)),
        ("ready", "llm"),
        ("step", 1),
        ("expect", alive("llm", 2)),  # the first old one drained (the fake exits at once on SIGTERM)
        ("advance", 1.0),
        ("step", 1),
        ("ready", "llm"),
        ("step", 2),
        ("expect", alive("llm", 2)),
        ("expect", spawned(4)),
        (
            "expect",
            lambda h: not h.supervisor.groups["llm"].roll_queue and h.supervisor.groups["llm"].replacement is None,
        ),
    ],
    "scale during a roll is refused as busy; the roll goes on": [
        *START_TWO,
        ("request", Restart(("llm",))),
        ("step", 1),
        ("request", Scale("llm", 5)),
        ("step", 1),
        ("expect", refused(ErrorCode.BUSY)),
        ("expect", lambda h: h.supervisor.groups["llm"].desired == 2),
    ],
    "stop during a roll aborts it: the replacement drains, the group stops": [
        *START_TWO,
        ("request", Restart(("llm",))),
        ("step", 1),
        ("request", SetStopped("llm", True)),
        ("step", 1),
        ("expect", refused(ErrorCode.BUSY)),
        ("request", Shutdown("down")),
        ("step", 2),
        ("expect", alive("llm", 0)),
    ],
    "an aborted roll (the replacement fails for good) keeps the old process serving": [
        *START_TWO,
        ("expect", lambda h: h.supervisor.groups["llm"].handles[0].pid == FAKE_PID_BASE),
        ("request", Restart(("llm",))),
        ("step", 1),
        ("exit_newest", 78),  # the replacement: a configuration error, FATAL at once
        ("step", 2),
        (
            "expect",
            lambda h: h.supervisor.groups["llm"].replacement is None and not h.supervisor.groups["llm"].roll_queue,
        ),
        ("expect", states("llm", "READY", "READY")),
        ("expect", lambda h: h.supervisor.groups["llm"].handles[0].pid == FAKE_PID_BASE),
    ],
    "a spawn that raises fails that replica (backoff), never the loop; the others start": [
        ("expect", lambda h: h.spawner.failing.add("llm/1") is None),
        ("step", 1),
        ("expect", states("llm", "STARTING", "BACKOFF")),
        ("expect", lambda h: h.supervisor.groups["llm"].spawn_failures == 1),
        ("expect", lambda h: "spawn failed" in h.supervisor.groups["llm"].handles[1].reason),
    ],
    "reload during a spawn applies the file against what runs (an unsaved scale included)": [
        *START_TWO,
        ("request", Scale("llm", 3)),
        ("step", 1),
        ("request", "RELOAD_SAME_FILE"),
        ("step", 1),
        ("expect", answered(lambda a: isinstance(a, dict) and a["scaled"] == {"llm": 2}, "scales llm back to 2")),
        ("step", 1),
        ("expect", lambda h: h.supervisor.groups["llm"].desired == 2),
    ],
    "a stopped group stays stopped across a reload; start brings it back": [
        *START_TWO,
        ("request", SetStopped("llm", True)),
        ("step", 1),
        ("expect", alive("llm", 0)),
        ("request", "RELOAD_SAME_FILE"),
        ("step", 2),
        ("expect", answered(lambda a: isinstance(a, dict) and a["stopped"] == ["llm"], "says llm stays stopped")),
        ("expect", alive("llm", 0)),
        ("request", SetStopped("llm", False)),
        ("step", 1),
        ("expect", alive("llm", 2)),
    ],
    "a reload the pool cannot apply is refused and changes nothing": [
        *START_TWO,
        ("request", "RELOAD_RENAMED_POOL"),
        ("step", 1),
        ("expect", refused(ErrorCode.INVALID_TOPOLOGY)),
        ("expect", lambda h: h.supervisor.topology.pool.name == "testpool"),
        ("expect", spawned(2)),
        ("expect", states("llm", "READY", "READY")),
    ],
    "restart-failed revives FATAL replicas with RESTARTS back to 0": [
        *START_TWO,
        ("exit", ("llm", 0, 78)),
        ("step", 1),
        ("expect", states("llm", "FATAL", "READY")),
        ("request", RestartFailed()),
        ("step", 1),
        ("expect", answered(lambda a: a == {"revived": ["llm/0"]}, "names llm/0")),
        ("expect", states("llm", "STARTING", "READY")),
        ("expect", lambda h: h.supervisor.groups["llm"].handles[0].restarts == 0),
    ],
    "a watchdog kill is told as the pool's, not as a possible OOM": [
        *START_TWO,
        ("advance", 16.0),
        ("step", 2),
        (
            "expect",
            lambda h: (
                (e := h.supervisor.groups["llm"].handles[0].last_exit) is not None
                and e.describe() == "killed by the pool: no WATCHDOG=1 for 15s"
            ),
        ),
    ],
}


@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_loop_scenario(tmp_path: Path, name: str) -> None:
    async with make_harness(tmp_path) as harness:
        file = harness.supervisor.topology.file
        reloads = {
            "RELOAD_SAME_FILE": Reload(load_topology(file)),
            "RELOAD_RENAMED_POOL": Reload(
                load_topology(write_topology(tmp_path, {"pool.name": "other"}, "renamed.toml"))
            ),
        }
        steps = [
            ("request", reloads[arg]) if kind == "request" and isinstance(arg, str) else (kind, arg)
            for kind, arg in SCENARIOS[name]
        ]
        with anyio.fail_after(10):
            await run(harness, steps)


IN_START = 3  # children in their start at once at most, in the test below


async def test_a_cold_start_goes_as_children_get_through_their_start_not_at_the_rate(tmp_path: Path) -> None:
    """The budget's rate (100/s) is no pace when children are slow to start: at most IN_START are in their start;
    the next goes as soon as one is READY, or once the oldest has been starting for the window (2 s)."""
    budget = SpawnBudget(rate=100, batch=BATCH, in_start=IN_START)
    async with make_harness(tmp_path, budget) as harness:
        steps: list[Step] = [
            ("request", Scale("llm", 10)),
            ("step", 1),
            ("expect", alive("llm", BATCH)),
            ("advance", 0.1),
            ("step", 1),
            ("expect", alive("llm", IN_START)),  # the rate allows 2 more, the bound 1
            ("advance", 0.1),
            ("step", 2),
            ("expect", alive("llm", IN_START)),  # none through its start: none more
            ("ready", "llm"),
            ("step", 1),
            ("expect", alive("llm", IN_START + BATCH)),  # through: a batch at once
            ("advance", 0.1),
            ("step", 1),
            ("expect", alive("llm", IN_START + BATCH + 1)),
            ("advance", 2.0),  # the three still starting are past the window: no longer held back by them
            ("step", 1),
            ("expect", alive("llm", IN_START + 2 * BATCH + 1)),
        ]
        with anyio.fail_after(10):
            await run(harness, steps)

"""Rolling restarts step by step, with a fake clock and no processes: the replacement is READY before the old
process drains, and a group scaled down meanwhile drops the replacement instead of failing."""

from __future__ import annotations

import anyio

from pipelex_pool.supervisor.groups import Readiness, SupervisedGroup
from pipelex_pool.supervisor.pool_state import group_progress
from pipelex_pool.supervisor.process.handle import Action, HandleTimings, ProcessHandle
from pipelex_pool.supervisor.process.state import ExitStatus, ProcState
from pipelex_pool.supervisor.rolling import advance_roll
from pipelex_pool.supervisor.spawning.spawner import ChildSpec
from pipelex_pool.topology.schema import RestartConfig


def make_group(replicas: int) -> SupervisedGroup:
    group = SupervisedGroup(
        name="llm",
        readiness=Readiness.NOTIFY,
        restart=RestartConfig(),
        timings=HandleTimings(start_timeout=10, stop_timeout=15, watchdog=None),
        make_spec=lambda replica: ChildSpec("llm", ["true"], {}, ""),
        desired=replicas,
    )
    for _ in range(replicas):
        handle = group.new_handle()
        handle.start(0)
        handle.spawned(100 + handle.replica)
        handle.ready(0)
    return group


def ALWAYS(now: float) -> bool:  # noqa: N802 (a constant-like predicate: the spawn budget never holds back)
    return True


def state_of(handle: ProcessHandle) -> ProcState:
    return handle.state  # (read through a call: mypy keeps an earlier narrowing of handle.state otherwise)


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[int, int, list[Action]]] = []

    async def __call__(self, group: SupervisedGroup, handle: ProcessHandle, actions: list[Action], now: float) -> None:
        self.calls.append((handle.replica, handle.generation, actions))


def test_each_replica_is_replaced_only_once_its_replacement_is_ready() -> None:
    async def scenario() -> None:
        group, execute = make_group(2), Recorder()
        old = list(group.handles)
        group.roll_queue = [0, 1]
        await advance_roll(group, 1, execute, ALWAYS, stopping=False)
        assert group.replacement is not None and execute.calls[-1][2] == [Action.SPAWN]
        await advance_roll(group, 2, execute, ALWAYS, stopping=False)  # not READY yet: nothing drains
        assert all(h.state is ProcState.READY for h in old) and len(execute.calls) == 1
        group.replacement.ready(3)
        await advance_roll(group, 3, execute, ALWAYS, stopping=False)
        assert group.handles[0] is not old[0] and old[0].state is ProcState.STOPPING
        assert execute.calls[-1] == (0, 1, [Action.TERMINATE]) and group.retiring == [old[0]]
        await advance_roll(group, 4, execute, ALWAYS, stopping=False)  # next replica
        assert group.replacement is not None and group.replacement.replica == 1

    anyio.run(scenario)


def test_scaled_down_during_a_roll_the_replacement_is_dropped() -> None:
    async def scenario() -> None:
        group, execute = make_group(2), Recorder()
        group.roll_queue = [1]
        await advance_roll(group, 1, execute, ALWAYS, stopping=False)
        replacement = group.replacement
        assert replacement is not None
        group.handles.pop()  # scaled down to one replica meanwhile
        replacement.ready(2)
        await advance_roll(group, 2, execute, ALWAYS, stopping=False)
        assert group.replacement is None and replacement in group.retiring and replacement.state is ProcState.STOPPING
        replacement.exited(ExitStatus(code=0), 3)
        assert state_of(replacement) is ProcState.STOPPED

    anyio.run(scenario)


def test_a_fatal_replacement_aborts_the_roll_and_keeps_the_old_process() -> None:
    async def scenario() -> None:
        group, execute = make_group(1), Recorder()
        old = group.handles[0]
        group.roll_queue = [0]
        await advance_roll(group, 1, execute, ALWAYS, stopping=False)
        assert group.replacement is not None
        group.replacement.exited(ExitStatus(code=78), 2)  # configuration error: FATAL at once
        await advance_roll(group, 2, execute, ALWAYS, stopping=False)
        assert group.replacement is None and group.roll_queue == [] and group.handles == [old]
        assert old.state is ProcState.READY

    anyio.run(scenario)


def test_group_progress_is_the_one_judgement_of_done() -> None:
    """pool_state.group_progress (what settled, /health, the deploy controller and status use): a roll is moving
    whatever the states; a FATAL replica is settled (given up on) but not all READY; a stopped group wants none."""
    group = make_group(2)
    assert group_progress(group).settled and group_progress(group).all_ready
    group.roll_queue = [0]
    assert not group_progress(group).settled and len(group_progress(group).ready) == 2
    group.roll_queue = []
    group.handles[1].exited(ExitStatus.from_returncode(1), 0.5)  # young death: backoff, not done
    assert not group_progress(group).settled
    for now in range(1, 60):  # dies young again and again: FATAL, given up on
        if group.handles[1].state is ProcState.FATAL:
            break
        for action in group.handles[1].tick(float(now)):
            if action is Action.SPAWN:
                group.handles[1].spawned(200 + now)
                group.handles[1].exited(ExitStatus.from_returncode(1), float(now) + 0.1)
    progress = group_progress(group)
    assert group.handles[1].state is ProcState.FATAL
    assert progress.settled and not progress.all_ready and progress.given_up == 1
    group.stopped_by_operator = True
    assert group_progress(group).wanted == 0 and group_progress(group).all_ready

"""`--wait`: the commands that change the pool wait until it is done, replica by replica, and say when it failed.

The judgement is pure (status answers in, verdict out) and tested here with hand-made answers; the commands
themselves run against a real pool in tests/test_control.py."""

from __future__ import annotations

from typing import Any

from pipelex_pool.control.status_doc import Replica, Status
from pipelex_pool.control.waiting import Goal, Progress, Want
from tests import status_doc


def row(group: str, n: int, state: str, pid: int | None, role: str = "replica", **extra: Any) -> Replica:
    return status_doc.replica(group, n, state, pid, role, **extra)


def answer(rows: list[Replica], desired: int = 2, **group: Any) -> Status:
    return status_doc.status(rows, {"llm": status_doc.group(desired, **group)})


def test_a_restart_is_done_when_every_replica_runs_a_new_process() -> None:
    goal = Goal({"llm": Want.REPLACED}, since=100.0, old_pids=frozenset({10, 11}))
    rolling = answer(
        [row("llm", 0, "READY", 10), row("llm", 1, "READY", 11), row("llm", 0, "STARTING", 20, "replacement")]
    )
    verdict = goal.judge(rolling)
    assert not verdict.done and not verdict.failed
    assert "llm/0 (replacement) STARTING (pid 20)" in verdict.pending
    assert "llm/1 still the old process (pid 11)" in verdict.pending
    half = answer([row("llm", 0, "READY", 20), row("llm", 1, "READY", 11), row("llm", 0, "STOPPING", 10, "retiring")])
    assert goal.judge(half).pending == ("llm/1 still the old process (pid 11)",)
    done = answer([row("llm", 0, "READY", 20), row("llm", 1, "READY", 21), row("llm", 1, "STOPPING", 11, "retiring")])
    assert goal.judge(done).done  # the old processes drain on: new code serving is what was asked


def test_an_aborted_roll_fails_the_wait_only_if_it_is_this_command_s() -> None:
    rows = [row("llm", 0, "READY", 10), row("llm", 1, "READY", 11)]
    aborted = {"reason": "llm/0: the replacement never became READY (FATAL: exit 1)", "at": 150.0}
    this_one = Goal({"llm": Want.REPLACED}, since=100.0, old_pids=frozenset({10, 11}))
    verdict = this_one.judge(answer(rows, roll_aborted=aborted))
    assert verdict.failed is not None and "llm/0: the replacement never became READY" in verdict.failed
    earlier = Goal({"llm": Want.REPLACED}, since=200.0, old_pids=frozenset({10, 11}))
    verdict = earlier.judge(answer(rows, roll_aborted=aborted))
    assert verdict.failed is None and not verdict.done


def test_ready_fails_on_fatal_waits_on_backoff_and_on_replicas_going_away() -> None:
    goal = Goal({"llm": Want.READY}, since=0.0)
    backoff = answer([row("llm", 0, "READY", 10), row("llm", 1, "BACKOFF", None, reason="exit 1; restarting in 1s")])
    verdict = goal.judge(backoff)
    assert not verdict.done and not verdict.failed and verdict.pending == ("llm/1 BACKOFF: exit 1; restarting in 1s",)
    fatal = answer([row("llm", 0, "READY", 10), row("llm", 1, "FATAL", None, reason="crash loop")])
    assert goal.judge(fatal).failed == "llm/1 FATAL: crash loop"
    scaled_down = answer([row("llm", 0, "READY", 10), row("llm", 1, "STOPPING", 11)], desired=1)
    assert goal.judge(scaled_down).pending == ("llm/1 STOPPING (pid 11)",)
    assert goal.judge(answer([row("llm", 0, "READY", 10), row("llm", 1, "EXITED", None)], desired=1)).done
    scaled_up = answer([row("llm", 0, "READY", 10)], desired=3)
    assert goal.judge(scaled_up).pending == ("llm/1 not started yet", "llm/2 not started yet")
    stopped = answer([row("llm", 0, "STOPPED", None)], stopped_by_operator=True)
    assert "stopped by the operator" in (goal.judge(stopped).failed or "")


def test_stopped_is_done_when_no_process_of_the_group_is_alive() -> None:
    goal = Goal({"llm": Want.STOPPED}, since=0.0)
    draining = answer([row("llm", 0, "STOPPING", 10), row("llm", 1, "STOPPED", None)])
    assert goal.judge(draining).pending == ("llm/0 STOPPING (pid 10)",)
    assert goal.judge(answer([row("llm", 0, "STOPPED", None), row("llm", 1, "EXITED", None)])).done


def test_progress_prints_one_line_per_replica_change() -> None:
    progress = Progress({"llm"})
    progress.prime(answer([row("llm", 0, "READY", 10)]))
    assert progress.lines(answer([row("llm", 0, "READY", 10)])) == []
    spawning = row("llm", 0, "STARTING", None, "replacement")
    assert progress.lines(answer([row("llm", 0, "READY", 10), spawning])) == []  # no pid yet: nothing to tell
    lines = progress.lines(answer([row("llm", 0, "READY", 10), row("llm", 0, "STARTING", 20, "replacement")]))
    assert lines == ["llm/0 (replacement): STARTING (pid 20)"]
    lines = progress.lines(answer([row("llm", 0, "READY", 20), row("llm", 0, "STOPPING", 10, "retiring")]))
    assert lines == ["llm/0: READY (pid 20)", "llm/0 (retiring): STOPPING (pid 10)"]
    lines = progress.lines(answer([row("llm", 0, "READY", 20)]))
    assert lines == ["llm/0: old process pid 10 exited"]
    lines = progress.lines(answer([row("llm", 0, "BACKOFF", None, last_exit="SIGKILL", reason="restarting")]))
    assert lines == ["llm/0: pid 20 exited (SIGKILL); BACKOFF: restarting"]


def test_a_fatal_replica_that_restart_failed_is_reviving_is_pending_not_a_failure() -> None:
    goal = Goal({"llm": Want.READY}, since=0.0)
    rows = [row("llm", 0, "READY", 10), row("llm", 1, "FATAL", None, reason="crash loop")]
    verdict = goal.judge(answer(rows, reviving=True))  # asked; the spawn budget has not started it yet
    assert not verdict.failed and not verdict.done and verdict.pending == ("llm/1 FATAL: crash loop",)
    assert goal.judge(answer(rows, reviving=False)).failed == "llm/1 FATAL: crash loop"


def test_paused_and_resumed_are_judged_from_each_replica_s_pause() -> None:
    paused = Goal({"llm": Want.PAUSED}, since=0.0)
    pausing = answer([row("llm", 0, "READY", 10, pause="paused"), row("llm", 1, "READY", 11, pause="pausing")])
    assert paused.judge(pausing).pending == ("llm/1 PAUSING",)
    assert paused.judge(answer([row("llm", n, "READY", 10 + n, pause="paused") for n in (0, 1)])).done
    resumed = Goal({"llm": Want.RESUMED}, since=0.0)
    assert resumed.judge(pausing).pending == ("llm/0 PAUSED", "llm/1 PAUSING")
    assert resumed.judge(answer([row("llm", n, "READY", 10 + n, pause=None) for n in (0, 1)])).done

"""What `--wait` waits for, judged from `status` answers alone (no clock, no socket: the CLI polls and prints).

A goal says, per group, what the command asked for: READY (every wanted replica READY, no roll or drain left),
REPLACED (READY, and no replica still runs a process that ran before the command), STOPPED (no process of the
group alive) or GONE (a group a reload removed: no process left). `Progress` turns two successive answers into one
line per replica change, so a long operation shows what it does replica by replica."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from pipelex_pool.control.status_doc import Group, Replica, Status

ALIVE = ("STARTING", "READY", "STOPPING")


class Want(enum.Enum):
    READY = "ready"
    REPLACED = "replaced"
    STOPPED = "stopped"
    GONE = "gone"
    PAUSED = "paused"  # every replica READY and paused (its in-flight tasks finished)
    RESUMED = "resumed"  # every replica READY and polling again


@dataclass(frozen=True)
class Verdict:
    done: bool
    failed: str | None = None  # the operation cannot succeed any more: what, and why
    pending: tuple[str, ...] = ()  # what is not there yet, one entry per replica or group


@dataclass(frozen=True)
class Goal:
    wants: dict[str, Want]
    since: float  # wall clock when the command was sent: older aborted rolls are not this command's
    old_pids: frozenset[int] = frozenset()  # for REPLACED: the processes that ran before the command

    def judge(self, status: Status) -> Verdict:
        pending: list[str] = []
        failures: list[str] = []
        for group, want in self.wants.items():
            rows = [r for r in status["replicas"] if r["group"] == group]
            info = status["groups"].get(group)
            if want in (Want.STOPPED, Want.GONE):
                pending += [f"{_name(r)} {r['state']} (pid {r['pid']})" for r in rows if r["state"] in ALIVE]
                continue
            if info is None:
                failures.append(f"{group}: no such group any more (removed by a reload?)")
                continue
            if info.get("stopped_by_operator"):
                failures.append(f"{group}: stopped by the operator (`pipelex-pool start {group}`)")
                continue
            failures += self._failures(group, info, rows)
            pending += self._pending(want, info, rows)
        if failures:
            return Verdict(done=False, failed="; ".join(failures), pending=tuple(pending))
        return Verdict(done=not pending, pending=tuple(pending))

    def _failures(self, group: str, info: Group, rows: list[Replica]) -> list[str]:
        wanted = [r for r in rows if r["role"] == "replica"][: info["desired"]]
        if info.get("reviving"):  # a FATAL replica the pool is about to start again is pending, not failed
            return []
        found = [
            f"{_name(r)} FATAL: {r['reason'] or r['last_exit'] or 'gave up'}" for r in wanted if r["state"] == "FATAL"
        ]
        aborted = info.get("roll_aborted")
        if aborted and aborted["at"] >= self.since:
            found.append(aborted["reason"])
        return found

    def _pending(self, want: Want, info: Group, rows: list[Replica]) -> list[str]:
        replicas = [r for r in rows if r["role"] == "replica"]
        wanted, extra = replicas[: info["desired"]], replicas[info["desired"] :]
        pending = [f"{_name(r)} {_state(r)}" for r in wanted if r["state"] != "READY"]
        if want is Want.PAUSED:
            pending += [f"{_name(r)} {(r['pause'] or 'polling').upper()}" for r in wanted if r.get("pause") != "paused"]
        if want is Want.RESUMED:
            pending += [f"{_name(r)} {pause.upper()}" for r in wanted if (pause := r["pause"])]
        group = rows[0]["group"] if rows else "?"
        pending += [f"{group}/{n} not started yet" for n in range(len(wanted), info["desired"])]
        pending += [f"{_name(r)} {_state(r)}" for r in rows if r["role"] == "replacement"]
        if want is Want.REPLACED:  # the old processes drain in the background: new code serving is the goal
            pending += [
                f"{_name(r)} still the old process (pid {r['pid']})"
                for r in wanted
                if r["state"] == "READY" and r["pid"] in self.old_pids
            ]
        else:  # scaled down: the replicas going away are part of the operation
            gone = [*extra, *(r for r in rows if r["role"] == "retiring")]
            pending += [f"{_name(r)} {_state(r)}" for r in gone if r["state"] in ALIVE]
        return pending


def _name(row: Replica) -> str:
    role = "" if row["role"] == "replica" else f" ({row['role']})"
    return f"{row['group']}/{row['replica']}{role}"


def _state(row: Replica) -> str:
    detail = f": {row['reason']}" if row["state"] in ("BACKOFF", "FATAL") and row.get("reason") else ""
    return f"{row['state']}{detail}" + (f" (pid {row['pid']})" if row["pid"] else "")


@dataclass
class Progress:
    """One line per replica change between two status answers, for the groups being waited on."""

    groups: set[str]
    seen: dict[tuple[str, int, str], tuple[int | None, str]] = field(default_factory=dict)

    def lines(self, status: Status) -> list[str]:
        now: dict[tuple[str, int, str], tuple[int | None, str]] = {}
        rows = {}
        for row in status["replicas"]:
            if row["group"] in self.groups:
                key = (row["group"], row["replica"], row["role"])
                now[key], rows[key] = (row["pid"], row["state"]), row
        out = []
        for key, (pid, state) in now.items():
            before = self.seen.get(key)
            if before == (pid, state):
                continue
            row = rows[key]
            if state == "STARTING" and pid is None:
                continue  # being spawned: the next answer has its pid
            if state == "READY":
                out.append(f"{_name(row)}: READY (pid {pid})")
            elif before is not None and before[0] is not None and before[0] != pid and state not in ALIVE:
                exit_text = f" ({row['last_exit']})" if row.get("last_exit") else ""
                out.append(f"{_name(row)}: pid {before[0]} exited{exit_text}; {_state(row)}")
            else:
                out.append(f"{_name(row)}: {_state(row)}")
        pids_now = {pid for pid, _ in now.values()}
        for key, (pid, _state_before) in self.seen.items():
            if key not in now and pid is not None and pid not in pids_now:  # not a replacement taking its slot
                group, replica, role = key
                what = {"retiring": "old process ", "replacement": "replacement "}.get(role, "")
                out.append(f"{group}/{replica}: {what}pid {pid} exited")
        self.seen = now
        return out

    def prime(self, status: Status) -> None:
        """Take `status` as the starting point (changes are printed from here on)."""
        self.lines(status)


def old_pids(status: Status, groups: set[str]) -> frozenset[int]:
    return frozenset(r["pid"] for r in status["replicas"] if r["group"] in groups and r["pid"])

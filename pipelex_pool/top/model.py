"""What `pipelex-pool top` shows, computed from the pool's status and events (no Textual here): the rows of its
tables, the backlog trends, an event's one-line text, a replica's detail."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelex_pool.control.status_doc import Status
from pipelex_pool.units import format_size

BLOCKS = " ▁▂▃▄▅▆▇█"
TREND_POINTS = 10  # points kept per queue, each the highest backlog seen in TREND_STEP_S: the last 2.5 minutes
TREND_STEP_S = 15.0
TREND_WIDTH = TREND_POINTS  # one block each
REPLICA_COLUMNS = ("GROUP", "#", "PID", "STATE", "UP", "RST", "FLIGHT/SLOTS", "CPU%", "RSS", "LAST EXIT")
QUEUE_COLUMNS = ("QUEUE", "TYPE", "BACKLOG", "AGE", "ADD/S", "OUT/S", "POLLERS", "TREND")
LAST_EXIT_WIDTH = 18
# events that say something happened to a replica, a group or the pool (not the routine chatter)
QUIET_EVENTS = frozenset({"control.subscribed", "control.client_gone", "worker.ready"})


def sparkline(values: list[float], width: int = 12) -> str:
    """The last `width` values as block characters, scaled to their own maximum ("" when there are none)."""
    points = values[-width:]
    if not points:
        return ""
    top = max(points)
    if top <= 0:
        return BLOCKS[1] * len(points)
    return "".join(BLOCKS[max(1, round(v / top * (len(BLOCKS) - 1)))] for v in points)


def uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    return f"{s}s" if s < 60 else f"{s // 60}m" if s < 3600 else f"{s // 3600}h{s % 3600 // 60:02d}"


def replica_rows(status: Status) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    groups = status.get("groups", {})
    for r in status["replicas"]:
        slots = info["activity_slots"] if (info := groups.get(r["group"])) else None
        flight = str(len(r.get("inflight") or [])) + (f"/{slots}" if slots else "")
        state = (r.get("pause") or r["state"]).upper() if r["state"] == "READY" else r["state"]  # PAUSED, PAUSING
        state = state if r["role"] == "replica" else f"{state}*"  # a replacement or a parked process
        last = r["last_exit"] or "-"
        rows.append(
            (
                r["group"],
                str(r["replica"]),
                str(r["pid"] or "-"),
                state,
                uptime(r["uptime_s"]),
                str(r["restarts"]),
                flight,
                f"{r['cpu_percent']:.0f}" if r.get("cpu_percent") is not None else "-",
                format_size(rss) if (rss := r["rss_bytes"]) else "-",
                last if len(last) <= LAST_EXIT_WIDTH else last[: LAST_EXIT_WIDTH - 1] + "…",
            )
        )
    return rows


@dataclass
class Trends:
    """Each queue's backlog over the last minutes: one point per TREND_STEP_S (the highest seen in it)."""

    points: dict[tuple[str, str], deque[float]] = field(default_factory=dict)
    step_of_last: dict[tuple[str, str], int] = field(default_factory=dict)
    started: float | None = None

    def add(self, status: Status, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self.started = now if self.started is None else self.started
        step = int((now - self.started) // TREND_STEP_S)
        for queue, types in status.get("queues", {}).items():
            for kind, q in types.items():
                key, backlog = (queue, kind), float(q["backlog"])
                points = self.points.setdefault(key, deque(maxlen=TREND_POINTS))
                if self.step_of_last.get(key) == step and points:
                    points[-1] = max(points[-1], backlog)
                else:
                    points.append(backlog)
                    self.step_of_last[key] = step

    def of(self, queue: str, kind: str) -> list[float]:
        return list(self.points.get((queue, kind), []))


def queue_rows(status: Status, trends: Trends) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = []
    for queue, types in status.get("queues", {}).items():
        for kind, q in types.items():
            others = len(q.get("fleet_pollers", [])) + len(q["foreign_pollers"])
            pollers = f"{len(q['pool_pollers'])}" + (f"+{others}" if others else "")
            rows.append(
                (
                    queue,
                    kind[:3],
                    str(q["backlog"]),
                    f"{q['backlog_age_s']:.0f}s",
                    f"{q['add_rate']:.1f}",
                    f"{q['dispatch_rate']:.1f}",
                    pollers + (" ?" if q["stale"] else ""),
                    sparkline(trends.of(queue, kind), TREND_WIDTH).ljust(TREND_WIDTH),  # its full width at once
                )
            )
    return rows


def header(status: Status) -> str:
    pool = status["pool"]
    counts = pool.get("counts") or {}
    temporal = pool["temporal"]
    reach = "Temporal OK" if temporal["answering"] else "Temporal NOT ANSWERING"
    tasks = pool["tasks"]
    states = " ".join(f"{n} {state}" for state, n in sorted(counts.items()) if n) if isinstance(counts, dict) else ""
    deployment = status.get("deployment")
    build = f" · build {deployment['build_id']} (current: {deployment['current'] or '-'})" if deployment else ""
    return (
        f"{pool['name']} · {temporal['target_host']} ({temporal['namespace']}) · {reach} · {states} · "
        f"{tasks['activities_completed']} done / {tasks['activities_failed']} failed{build}"
    )


def event_line(event: dict[str, Any]) -> str | None:
    """One line for an event of the supervisor, or None for routine ones."""
    name = str(event.get("event", ""))
    if name in QUIET_EVENTS:
        return None
    time = str(event.get("timestamp", ""))[11:19]
    skip = {"event", "timestamp", "level", "pool"}
    fields = " ".join(f"{k}={v}" for k, v in event.items() if k not in skip)
    level = str(event.get("level", "info"))
    mark = "!" if level in ("warning", "error", "critical") else " "
    return f"{time}{mark}{name} {fields}"


def detail(status: Status, group: str, replica: int, lines: int = 8) -> str:
    """A replica: identity, build, its attempts in flight, the last lines of its log."""
    found = [r for r in status["replicas"] if r["group"] == group and r["replica"] == replica]
    if not found:
        return f"{group}/{replica}: gone"
    r = found[0]
    text = [
        f"{group}/{replica} pid {r['pid'] or '-'} {r['state']} · {r.get('identity') or '-'}",
        f"queue {r['queue'] or '-'} · scope {r['scope'] or '-'} · build {r.get('build_id') or '-'} · "
        f"workflow runs cached {r.get('workflow_runs_cached', 0)}",
    ]
    if r.get("reason"):
        text.append(f"reason: {r['reason']}")
    inflight = r.get("inflight") or []
    text.append(f"in flight ({len(inflight)}):")
    text += [
        f"  {a['activity_type']} #{a['attempt']} {a['age_s']:.0f}s  {a['workflow_id']}" for a in inflight[:10]
    ] or ["  -"]
    log = Path(status["pool"]["log_dir"]) / f"{group}-{replica}.log"
    text.append(f"last lines of {log}:")
    text += [f"  {line}" for line in tail(log, lines)] or ["  (none)"]
    return "\n".join(text)


def tail(path: Path, lines: int) -> list[str]:
    try:
        with path.open("rb") as handle:
            handle.seek(0, 2)
            handle.seek(max(0, handle.tell() - 16384))
            return handle.read().decode(errors="replace").splitlines()[-lines:]
    except OSError:
        return []

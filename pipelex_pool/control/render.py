"""Human views of control answers (the CLI prints these unless --json)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from pipelex_pool.control.status_doc import Deployment, Queue, Status
from pipelex_pool.temporal.connection_text import render_connection
from pipelex_pool.units import format_size

LAST_EXIT_WIDTH = 40  # the table's LAST EXIT column; a longer one (with the last line the replica wrote) is cut

COLUMNS = (
    "GROUP", "#", "PID", "STATE", "SCOPE", "PROFILE", "QUEUE", "UPTIME", "RESTARTS", "LAST EXIT", "RSS", "CPU%",
    "TASKS OK/FAIL", "IN FLIGHT", "POLLING",
)  # fmt: skip


# The replica table's columns, dropped first to last until it fits a narrow terminal (GROUP, #, PID, STATE and
# POLLING always stay): what an operator scans for during an incident is kept longest.
DROP_ORDER = (
    "PROFILE", "SCOPE", "TASKS OK/FAIL", "CPU%", "RSS", "UPTIME", "QUEUE", "LAST EXIT", "RESTARTS", "IN FLIGHT",
)  # fmt: skip


def table(rows: Sequence[tuple[str, ...]], width: int | None = None, drop: tuple[str, ...] = ()) -> list[str]:
    """Rows as aligned text; with `width`, the columns named in `drop` are left out, in that order, until the
    table fits (a table that still does not fit keeps its remaining columns: lines are cut by the caller)."""
    keep = list(range(len(rows[0])))

    def lines() -> list[str]:
        widths = {i: max(len(row[i]) for row in rows) for i in keep}
        return ["  ".join(row[i].ljust(widths[i]) for i in keep).rstrip() for row in rows]

    out = lines()
    for name in drop:
        if width is None or max(len(line) for line in out) <= width:
            break
        if name in rows[0]:
            keep.remove(rows[0].index(name))
            out = lines()
    return out


def fit(lines: list[str], width: int | None) -> list[str]:
    """Each line cut to `width` (with an ellipsis), when a width is given."""
    if width is None:
        return lines
    return [line if len(line) <= width else line[: max(width - 1, 0)] + "…" for line in lines]


def _short(text: str, width: int) -> str:
    """A cell cut to `width` (the whole text is in --json, and a failed replica's reason in the notes)."""
    return text if len(text) <= width else text[: width - 3] + "..."


def _uptime(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _tasks(tasks: dict[str, Any] | None) -> str:
    return f"{tasks['activities_completed']}/{tasks['activities_failed']}" if tasks else "-"


def _pollers(queue: Queue) -> str:
    """The pool's live replicas polling the queue, then its fleet's and others apart: "2", "2 + 3 fleet + 1 other"."""
    fleet, foreign = len(queue.get("fleet_pollers", [])), len(queue["foreign_pollers"])
    return (
        f"{len(queue['pool_pollers'])}"
        + (f" + {fleet} fleet" if fleet else "")
        + (f" + {foreign} other" if foreign else "")
    )


def _deployment(deployment: Deployment) -> str:
    """ "pipelex: build B (current), A draining; deploy draining: waiting for ..." in one line."""
    build, current = deployment["build_id"], deployment["current"]
    text = f"{deployment['name']}: this pool starts build {build}; Temporal's current: {current or 'none yet'}"
    if deployment.get("ramping"):
        text += f", ramping {deployment['ramping']} ({deployment['ramping_percentage']:g}%)"
    others = [f"{b} {v['status']}" for b, v in sorted(deployment["versions"].items()) if b not in (build, current)]
    text += f"; other versions: {', '.join(others)}" if others else ""
    deleted = deployment.get("versions_deleted") or []
    if deleted:
        text += f"; deleted lately: {', '.join(d['build_id'] for d in deleted[-5:])}"
    kept = deployment.get("versions_kept") or {}
    if kept:
        text += f"; not deletable yet: {', '.join(sorted(kept))} (Temporal: {next(iter(kept.values()))})"
    plan = deployment.get("deploy")
    if plan and not plan.get("outcome"):
        text += f"\n             deploy {plan['from_build']} -> {plan['to_build']}: {plan['phase']}: {plan['detail']}"
    elif plan:
        text += f"\n             last deploy {plan['from_build']} -> {plan['to_build']}: {plan['outcome']}"
    return text


def render_status(status: Status, width: int | None = None) -> str:
    """The status as a table; `width` (a terminal's columns): the replica table drops its least useful columns
    (DROP_ORDER) until it fits, and longer lines are cut."""
    pool = status["pool"]
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(pool["since"]))
    dev = pool["dev_server"]
    dev_text = f"managed, {dev['state']}" if dev["managed"] else "not managed"
    temporal = pool["temporal"]
    down_since = temporal.get("not_answering_since")
    answer = (
        f"NOT ANSWERING since {time.strftime('%H:%M:%S', time.localtime(down_since))} "
        f"({_uptime(time.time() - down_since)}); "
        if down_since
        else ""
    )
    lines = [
        f"pool {pool['name']} (supervisor pid {pool['pid']}, protocol {status['protocol']})",
        f"  topology   {pool['topology']}",
        f"  since      {since} (up {_uptime(pool['uptime_s'])})",
        f"  temporal   {temporal['target_host']} namespace {temporal['namespace']}; {answer}dev server {dev_text}",
    ]
    connection = temporal.get("connection")
    if connection and (connection["tls"] or connection["api_key"]):
        for n, line in enumerate(render_connection(connection)):
            lines.append(f"  {'connection' if n == 0 else ''}{' ' * (1 if n == 0 else 11)}{line}")
    tasks = pool["tasks"]
    done = tasks["activities_completed"] + tasks["activities_failed"]
    completed, failed = tasks["activities_completed"], tasks["activities_failed"]
    average = f" ({100 * failed / done:.1f}%), {tasks['activity_seconds'] / done:.2f}s on average" if done else ""
    runs = tasks["workflow_runs_completed"]
    wf_tasks, wf_failed = tasks["workflow_tasks_completed"], tasks["workflow_tasks_failed"]
    lines.append(
        f"  tasks      {completed} activities completed, {failed} failed{average}; "
        f"{wf_tasks} workflow tasks ({wf_failed} failed), {runs} workflow runs completed"
    )
    deployment = status.get("deployment")
    if deployment:
        lines.append(f"  deployment {_deployment(deployment)}")
    if pool.get("busy"):
        lines.append(f"  busy       {pool['busy']}")
    if pool.get("shutting_down"):
        lines.append("  stopping   draining every replica")
    rows = [COLUMNS]
    for r in status["replicas"]:
        state = (r.get("pause") or r["state"]).upper() if r["state"] == "READY" else r["state"]
        state = state if r["role"] == "replica" else f"{state} ({r['role']})"
        rows.append(
            (
                r["group"],
                str(r["replica"]),
                str(r["pid"] or "-"),
                state,
                r["scope"] or "-",
                r["profile"] or "-",
                r["queue"] or "-",
                _uptime(r["uptime_s"]),
                str(r["restarts"]),
                _short(r["last_exit"] or "-", LAST_EXIT_WIDTH),
                format_size(r["rss_bytes"]) if r["rss_bytes"] else "-",
                f"{r['cpu_percent']:.0f}" if r["cpu_percent"] is not None else "-",
                _tasks(r["tasks"]),
                str(len(r.get("inflight") or [])),
                {True: "yes", False: "NO", None: "-"}[r.get("polling")],
            )
        )
    shown = {r["group"] for r in status["replicas"]}
    for name, group in status["groups"].items():  # a group with no process: a row that says why (supervisorctl's)
        if name not in shown:
            state = "STOPPED" if group.get("stopped_by_operator") else "SCALED TO 0"
            where = (group.get("scope") or "-", group.get("profile") or "-", group.get("queue") or "-")
            rows.append((name, "-", "-", state, *where, "-", "0", "-", "-", "-", _tasks(group.get("tasks")), "0", "-"))
    lines.append("")
    lines += table(rows, width, DROP_ORDER)
    queue_rows = [("QUEUE", "TYPE", "BACKLOG", "AGE", "ADD/S", "DISPATCH/S", "POLLERS")]
    for queue, types in status.get("queues", {}).items():
        for kind, q in types.items():
            stale = " (stale)" if q["stale"] else ""
            queue_rows.append(
                (queue, kind, str(q["backlog"]), f"{q['backlog_age_s']:.0f}s", f"{q['add_rate']:.1f}",
                 f"{q['dispatch_rate']:.1f}", _pollers(q) + stale)
            )  # fmt: skip
    if len(queue_rows) > 1:
        lines.append("")
        lines += table(queue_rows, width, ("ADD/S", "DISPATCH/S", "AGE"))
    metrics = [
        f"  {r['group']}/{r['replica']} (pid {r['pid']}): {r['sdk_metrics']}"
        for r in status["replicas"]
        if r.get("sdk_metrics")
    ]
    if metrics:
        lines += ["", "Temporal SDK metrics:", *metrics]
    for name, group in status["groups"].items():
        handed = sum((group.get("handed_back") or {}).values())
        if handed or group.get("hand_back_refused"):
            lines.append(
                f"hand-back {name}: {handed} attempt(s) of dead replicas handed back to Temporal, "
                f"{group.get('hand_back_refused', 0)} refused (already finished or gone)"
            )
        if group.get("runs_handed_back"):
            lines.append(
                f"hand-back {name}: {group['runs_handed_back']} workflow run(s) of dead replicas moved off their "
                "sticky queues"
            )
        if scale := group["autoscale"]:
            bounds = f"{scale['min']}..{scale['max']}"
            lines.append(f"autoscale {name}: {scale['desired']} replica(s), bounds {bounds}: {scale['decision']}")
    faults = status["pool"].get("faults") or {}
    if faults:
        caught = ", ".join(f"{task}: {count}" for task, count in sorted(faults.items()))
        lines.append(f"faults caught in the supervisor's own tasks (each restarted; `pipelex-pool events`): {caught}")
    if status.get("temporal_watch_error"):
        lines.append(f"temporal watch: {status['temporal_watch_error']}")
    warnings = status.get("warnings") or []
    if warnings:
        lines += ["", "warnings:", *[f"  {w}" for w in warnings]]
    notes = [f"  {r['group']}/{r['replica']}: {r['reason']}" for r in status["replicas"] if r.get("reason")]
    notes += [
        f"  {r['group']}/{r['replica']}: {r['status_text']} (not a failure: it keeps trying)"
        for r in status["replicas"]
        if r.get("waiting_for_temporal")
    ]
    notes += [
        f"  {r['group']}/{r['replica']}: Temporal has no recent heartbeat from it while its process runs (hung?)"
        for r in status["replicas"]
        if r.get("heartbeat_stale")
    ]
    notes += [
        f"  {r['group']}/{r['replica']}: retiring, {r['retiring_because']}"
        for r in status["replicas"]
        if r.get("retiring_because")
    ]
    notes += [
        f"  {name}: starts after {', '.join(g['after'])}; waiting for {', '.join(g['waiting_for'])} to be READY"
        for name, g in status["groups"].items()
        if g.get("waiting_for")
    ]
    paused = [name for name, g in status["groups"].items() if g.get("paused_by_operator")]
    if paused:
        notes.append(f"  paused by operator: {', '.join(paused)} (`pipelex-pool resume GROUP`)")
    stopped = [name for name, g in status["groups"].items() if g["stopped_by_operator"]]
    if stopped:
        notes.append(f"  stopped by operator: {', '.join(stopped)} (`pipelex-pool start GROUP`)")
    if notes:
        lines += ["", "notes:", *notes]
    return "\n".join(fit(lines, width))


def render_fleet(status: Status) -> str:
    """Per queue, every pool and host of the fleet Temporal lists polling it (and anyone else, apart)."""
    from pipelex_pool.contract import host_of, pool_of

    fleet = status["fleet"]
    pools = fleet["pools"]
    lines = [
        f"fleet {fleet['name']}: "
        + (f"{len(pools)} live pool(s) on its beacon queue" if pools is not None else "not described yet")
    ]
    for pool, hosts in (pools or {}).items():
        lines.append(f"  {pool:<24} {', '.join(hosts)}{'  (this pool)' if pool == status['pool']['name'] else ''}")
    plan = deployment["deploy"] if (deployment := status["deployment"]) else None
    if plan and not plan["outcome"]:
        lines.append(f"deploy of build {plan['to_build']}: {plan['phase']}: {plan['detail']}")
    rows = [("QUEUE", "TYPE", "POOL", "HOST", "POLLERS")]
    for queue, types in status.get("queues", {}).items():
        for kind, q in types.items():
            counts: dict[tuple[str, str], int] = {}
            for identity in [*q["pool_pollers"], *q.get("fleet_pollers", [])]:
                key = (pool_of(identity), host_of(identity))
                counts[key] = counts.get(key, 0) + 1
            for identity in q["foreign_pollers"]:
                key = (f"(not in the fleet) {identity}", host_of(identity))
                counts[key] = counts.get(key, 0) + 1
            for (pool, host), n in sorted(counts.items()):
                rows.append((queue, kind, pool, host, str(n)))
            if not counts:
                rows.append((queue, kind, "-", "-", "0"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines.append("")
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    workers = fleet.get("workers") or []
    if workers:
        lines += ["", "workers of the fleet, from Temporal's heartbeats:"]
        beat_rows = [("POOL", "WORKER", "STATUS", "ACT SLOTS", "BUILD", "HEARTBEAT")]
        beat_rows += [
            (w["pool"], w["identity"], w["status"], f"{w['activity_slots_used']}/"
             f"{w['activity_slots_used'] + w['activity_slots_available']}", w["build_id"] or "-",
             f"{w['heartbeat_age_s']:.0f}s ago")
            for w in workers
        ]  # fmt: skip
        widths = [max(len(row[i]) for row in beat_rows) for i in range(len(beat_rows[0]))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in beat_rows]
    return "\n".join(lines)

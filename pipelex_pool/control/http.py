"""The optional HTTP endpoint (`[pool] metrics = "host:port"`): GET /health for load balancers and probes,
GET /metrics in Prometheus text format. A deliberately small HTTP/1.0 server: two read-only routes."""

from __future__ import annotations

import json
from typing import Any

import anyio
import structlog
from anyio.abc import SocketStream, TaskStatus
from anyio.streams.buffered import BufferedByteReceiveStream

from pipelex_pool.control.status import group_tasks
from pipelex_pool.supervisor.process.state import ProcState
from pipelex_pool.supervisor.view import PoolView

log = structlog.get_logger("pipelex_pool.http")
REQUEST_TIMEOUT_S = 5.0


def health(supervisor: PoolView) -> tuple[int, dict[str, Any]]:
    """200 when every wanted replica is READY and Temporal answers; 503 naming what is not."""
    problems: list[dict[str, Any]] = []
    for group in supervisor.all_groups():
        if group.stopped_by_operator or group.removed:
            continue
        states = [h.state.value for h in group.handles[: group.desired]]
        ready = states.count(ProcState.READY.value)
        if ready < group.desired:
            problems.append({"group": group.name, "ready": ready, "desired": group.desired, "states": states})
    if supervisor.health.error:
        problems.append({"temporal": supervisor.health.error})
    if supervisor.shutting_down:
        problems.append({"pool": "shutting down"})
    body = {"healthy": not problems, "pool": supervisor.topology.pool.name, "problems": problems}
    return (200 if not problems else 503), body


_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": "\\n"})


def _labels(**labels: object) -> str:
    """Prometheus label set, values escaped as the text format requires."""
    return "{" + ",".join(f'{key}="{str(value).translate(_ESCAPES)}"' for key, value in labels.items()) + "}"


def metrics(supervisor: PoolView) -> str:
    """Prometheus text exposition of the pool's replicas, restarts, exits and resource use."""
    out: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")

    family("pipelex_pool_up", "gauge", "1 while the supervisor runs.")
    out.append(f"pipelex_pool_up{_labels(pool=supervisor.topology.pool.name)} 1")
    family("pipelex_pool_temporal_reachable", "gauge", "1 when the Temporal server answered the last check.")
    out.append(f"pipelex_pool_temporal_reachable {0 if supervisor.health.error else 1}")
    family("pipelex_pool_replicas", "gauge", "Replicas by group and state.")
    for group in supervisor.all_groups():
        states = [h.state for h in group.handles]
        for state in ProcState:
            out.append(f"pipelex_pool_replicas{_labels(group=group.name, state=state.value)} {states.count(state)}")
    family("pipelex_pool_replicas_desired", "gauge", "Replicas each group should have.")
    for group in supervisor.all_groups():
        desired = 0 if group.stopped_by_operator else group.desired
        out.append(f"pipelex_pool_replicas_desired{_labels(group=group.name)} {desired}")
    family("pipelex_pool_restarts_total", "counter", "Automatic restarts (after backoff) by group.")
    for group in supervisor.all_groups():
        out.append(f"pipelex_pool_restarts_total{_labels(group=group.name)} {group.restarts_total}")
    family("pipelex_pool_exits_total", "counter", "Replica exits by group and decoded status.")
    for group in supervisor.all_groups():
        for reason, count in sorted(group.exits_total.items()):
            out.append(f"pipelex_pool_exits_total{_labels(group=group.name, reason=reason)} {count}")
    family("pipelex_pool_activities_total", "counter", "Activities finished by the group's replicas, by outcome.")
    seconds: list[str] = []
    for group in supervisor.all_groups():
        tasks = group_tasks(supervisor, group)
        for outcome, count in (("completed", tasks.activities_completed), ("failed", tasks.activities_failed)):
            out.append(f"pipelex_pool_activities_total{_labels(group=group.name, outcome=outcome)} {count}")
        seconds.append(f"pipelex_pool_activity_seconds_total{_labels(group=group.name)} {tasks.activity_seconds:.3f}")
    family("pipelex_pool_activity_seconds_total", "counter", "Time spent in finished activities, by group.")
    out += seconds
    family("pipelex_pool_workflow_tasks_total", "counter", "Workflow tasks run by the group's replicas, by outcome.")
    for group in supervisor.all_groups():
        tasks = group_tasks(supervisor, group)
        for outcome, count in (("completed", tasks.workflow_tasks_completed), ("failed", tasks.workflow_tasks_failed)):
            out.append(f"pipelex_pool_workflow_tasks_total{_labels(group=group.name, outcome=outcome)} {count}")
    family("pipelex_pool_queue_backlog", "gauge", "Approximate backlog of each watched task queue and type.")
    views = sorted(supervisor.watch.views.items(), key=lambda kv: (kv[0][0], kv[0][1].name))
    live: list[str] = []
    for (queue, queue_type), view in views:
        labels = _labels(queue=queue, type=queue_type.name.lower())
        out.append(f"pipelex_pool_queue_backlog{labels} {view.stats.backlog}")
        live.append(f"pipelex_pool_queue_live_pollers{labels} {len(view.live_pollers())}")
    family("pipelex_pool_queue_live_pollers", "gauge", "Pollers Temporal saw on each queue within the last 75 s.")
    out += live
    family(
        "pipelex_pool_autoscale_desired", "gauge", "Replicas the autoscaler asks for (actual: pipelex_pool_replicas)."
    )
    for group in supervisor.groups.values():
        if group.spec is not None and group.spec.autoscale is not None:
            out.append(f"pipelex_pool_autoscale_desired{_labels(group=group.name)} {group.desired}")
    family(
        "pipelex_pool_handed_back_total",
        "counter",
        "In-flight activity attempts of dead replicas handed back to Temporal, by group and exit reason.",
    )
    for group in supervisor.groups.values():
        for reason, count in sorted(group.handed_back.items()):
            out.append(f"pipelex_pool_handed_back_total{_labels(group=group.name, reason=reason)} {count}")
    family("pipelex_pool_hand_back_refused_total", "counter", "Hand-backs Temporal refused (already finished, gone).")
    for group in supervisor.groups.values():
        out.append(f"pipelex_pool_hand_back_refused_total{_labels(group=group.name)} {group.hand_back_refused}")
    family("pipelex_pool_replica_inflight_attempts", "gauge", "Activity attempts each replica runs now.")
    for group in supervisor.groups.values():
        for handle in group.handles:
            info = supervisor.info.get(handle)
            if handle.pid is not None and info is not None:
                labels = _labels(group=group.name, replica=handle.replica)
                out.append(f"pipelex_pool_replica_inflight_attempts{labels} {len(info.inflight)}")
    family("pipelex_pool_replica_rss_bytes", "gauge", "Resident memory of each replica.")
    cpu: list[str] = []
    for group in supervisor.all_groups():
        for handle in group.handles:
            info = supervisor.info.get(handle)
            if handle.pid is None or info is None or info.usage is None:
                continue
            labels = _labels(group=group.name, replica=handle.replica, pid=handle.pid)
            out.append(f"pipelex_pool_replica_rss_bytes{labels} {info.usage.rss_bytes}")
            cpu.append(f"pipelex_pool_replica_cpu_percent{labels} {info.usage.cpu_percent}")
    family("pipelex_pool_replica_cpu_percent", "gauge", "CPU use of each replica, percent of one core.")
    out += cpu
    return "\n".join(out) + "\n"


class HttpEndpoint:
    def __init__(self, supervisor: PoolView, address: str) -> None:
        self.supervisor = supervisor
        host, _, port = address.rpartition(":")
        self.host, self.port = host or "127.0.0.1", int(port)

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        listener = await anyio.create_tcp_listener(local_host=self.host, local_port=self.port)
        log.info("http.listening", address=f"{self.host}:{self.port}", routes=["/health", "/metrics"])
        task_status.started()
        async with listener:
            await listener.serve(self._connection)

    async def _connection(self, stream: SocketStream) -> None:
        async with stream:
            try:
                with anyio.fail_after(REQUEST_TIMEOUT_S):
                    request = await BufferedByteReceiveStream(stream).receive_until(b"\r\n", 8192)
            except (
                TimeoutError,
                anyio.DelimiterNotFound,
                anyio.EndOfStream,
                anyio.IncompleteRead,
                anyio.BrokenResourceError,
            ):
                return
            parts = request.decode(errors="replace").split()
            method, path = (parts[0], parts[1].split("?")[0]) if len(parts) >= 2 else ("", "")
            if method != "GET":
                status, body, kind = 405, b"only GET\n", "text/plain"
            elif path == "/health":
                code, payload = health(self.supervisor)
                status, body, kind = code, json.dumps(payload).encode(), "application/json"
            elif path == "/metrics":
                status, body, kind = 200, metrics(self.supervisor).encode(), "text/plain; version=0.0.4"
            else:
                status, body, kind = 404, b"routes: /health /metrics\n", "text/plain"
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}[status]
            head = (
                f"HTTP/1.0 {status} {reason}\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            try:
                with anyio.fail_after(REQUEST_TIMEOUT_S):
                    await stream.send(head.encode() + body)
            except (TimeoutError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                return

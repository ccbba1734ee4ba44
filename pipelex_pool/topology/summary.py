"""What a topology means, for `pipelex-pool validate`: groups, scopes, queues and routing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelex_pool.errors import Severity
from pipelex_pool.temporal.certs import connection_view
from pipelex_pool.temporal.connection_text import render_connection
from pipelex_pool.topology.load import Topology
from pipelex_pool.units import format_duration, format_size


def summarize(topology: Topology) -> dict[str, Any]:
    """A JSON-ready description of the topology."""
    temporal = topology.temporal
    groups = []
    for group in topology.groups.values():
        groups.append(
            {
                "name": group.name,
                "scope": group.scope,
                "task_queue": group.task_queue,
                "profile": group.profile,
                "replicas": group.replicas,
                "autoscale": group.autoscale.model_dump(mode="json") if group.autoscale else None,
                "command": group.command or "pipelex-pool worker (built in)",
                "readiness": group.readiness,
                "max_memory": group.max_memory,
                "graceful_shutdown_timeout": format_duration(group.graceful_shutdown_timeout),
                "restart": group.restart.model_dump(mode="json"),
                "after": group.after,
                "env_file": group.env_file,
            }
        )
    used_scopes = sorted({group.scope for group in topology.groups.values()})
    scopes = {
        name: {"workflows": list(topology.scopes[name].workflows), "activities": list(topology.scopes[name].activities)}
        for name in used_scopes
    }
    queues: dict[str, dict[str, list[str]]] = {}
    for queue in temporal.known_queues():
        queues[queue] = {"polled_by": [], "activities": []}
    for group in topology.groups.values():
        queues.setdefault(group.task_queue, {"polled_by": [], "activities": []})["polled_by"].append(group.name)
    routes = temporal.worker_config.activity_queues
    for activity, route in routes.items():
        queues[route.default]["activities"].append(activity)
        for handle, queue in route.by_handle.items():
            queues[queue]["activities"].append(f"{activity} (handle {handle})")
    unrouted = [name for name in topology.catalog.activities if name not in routes]
    queues[temporal.default_task_queue]["activities"].extend(f"{name} (not routed)" for name in unrouted)
    return {
        "file": str(topology.file),
        "pool": topology.pool.name,
        "app": topology.pool.app,
        "server": {
            "name": temporal.temporal_config.selected_server,
            "target_host": topology.connection.address,
            "namespace": topology.connection.namespace,
        },
        "connection": connection_view(topology.connection),
        "dev_server": topology.dev_server.enabled,
        "payload_codec": _codec(topology),
        "default_task_queue": temporal.default_task_queue,
        "total_replicas": sum(group.replicas for group in topology.groups.values()),
        "groups": groups,
        "scopes": scopes,
        "queues": queues,
        "issues": [issue.as_dict() for issue in topology.issues],
    }


def _codec(topology: Topology) -> dict[str, Any] | None:
    """Where offloaded payloads go, when Pipelex's storage codec is on (relative paths: from the current dir)."""
    codec = topology.temporal.payload_codec_config
    if not codec.is_enabled:
        return None
    provider = codec.storage_provider_config
    if provider.local is not None and provider.method == "local":
        where = str(Path(provider.local.local_storage_path).expanduser().absolute())
    elif provider.s3 is not None and provider.method == "s3":
        where = f"s3://{provider.s3.bucket_name} ({provider.s3.region})"
    else:
        where = provider.method
    return {
        "method": provider.method,
        "where": where,
        "size_threshold": codec.size_threshold,
        "prefix": codec.storage_prefix,
    }


def render_summary(topology: Topology) -> str:
    """The human view of `summarize`."""
    data = summarize(topology)
    server = data["server"]
    lines = [
        f"{data['file']}: OK",
        f"pool {data['pool']!r}: app {data['app']}, server {server['name']} ({server['target_host']}, "
        f"namespace {server['namespace']}), dev server {data['dev_server']}",
        *(
            f"connection: {line}" if n == 0 else f"  {line}"
            for n, line in enumerate(render_connection(data["connection"]))
        ),
        *(
            [
                f"payload codec: payloads of {format_size(codec['size_threshold'])} or more go to {codec['where']}, "
                f"under {codec['prefix']!r}"
            ]
            if (codec := data["payload_codec"])
            else []
        ),
        "",
        f"groups ({len(data['groups'])}, {data['total_replicas']} replicas):",
    ]
    for group in topology.groups.values():
        extra = []
        if group.autoscale:
            extra.append(
                f"autoscale {group.autoscale.min}..{group.autoscale.max} "
                f"@{group.autoscale.target_backlog_per_replica}/replica"
            )
        if group.max_memory:
            extra.append(f"max_memory {format_size(group.max_memory)}")
        if group.command:
            extra.append(f"command {group.command[0]}")
        if group.after:
            extra.append(f"starts after {', '.join(group.after)}")
        if group.env_file:
            extra.append(f"env from {', '.join(Path(path).name for path in group.env_file)}")
        extra.append(f"grace {format_duration(group.graceful_shutdown_timeout)}")
        lines.append(
            f"  {group.name:<12} x{group.replicas:<3} scope={group.scope:<16} queue={group.task_queue:<20} "
            f"profile={group.profile}  ({', '.join(extra)})"
        )
    lines += ["", "scopes:"]
    for name, scope in data["scopes"].items():
        lines.append(f"  {name}")
        lines.append(f"    workflows:  {', '.join(scope['workflows']) or '-'}")
        lines.append(f"    activities: {', '.join(scope['activities']) or '-'}")
    lines += ["", "queues:"]
    for queue, info in data["queues"].items():
        default = " (default)" if queue == data["default_task_queue"] else ""
        lines.append(f"  {queue}{default}")
        lines.append(f"    polled by:  {', '.join(info['polled_by']) or '- (no group of this pool)'}")
        lines.append(f"    activities: {', '.join(info['activities']) or '-'}")
    notices = [issue for issue in topology.issues if issue.severity is not Severity.ERROR]
    if notices:
        lines += ["", f"{len(notices)} notice(s):"]
        lines += [f"  {issue.render(str(topology.file))}" for issue in notices]
    return "\n".join(lines)

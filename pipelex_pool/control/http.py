"""The optional HTTP endpoint (`[pool] metrics = "host:port"`): GET /health for load balancers and probes,
GET /metrics for Prometheus (text or OpenMetrics, as the scraper's Accept header asks; `name[]=` filters as
prometheus-client's own server reads them; HEAD too). A deliberately small HTTP/1.0 server on the supervisor's own
event loop (so a scrape reads the pool's state between two loop steps, never during one): two read-only routes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import structlog
from anyio.abc import SocketStream, TaskStatus
from anyio.streams.buffered import BufferedByteReceiveStream
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import CollectorRegistry

from pipelex_pool.control.metrics import pool_registry
from pipelex_pool.errors import PoolError
from pipelex_pool.supervisor.pool_state import group_progress
from pipelex_pool.supervisor.view import PoolView

log = structlog.get_logger("pipelex_pool.http")
REQUEST_TIMEOUT_S = 5.0
MAX_REQUEST_HEAD = 16384


def health(supervisor: PoolView) -> tuple[int, dict[str, Any]]:
    """200 when every wanted replica is READY and Temporal answers; 503 naming what is not."""
    problems: list[dict[str, Any]] = []
    for group in supervisor.all_groups():  # (a roll is no problem: its READY replicas serve meanwhile)
        progress = group_progress(group)
        if len(progress.ready) < progress.wanted:
            states = [h.state.value for h in group.handles[: group.desired]]
            problems.append(
                {"group": group.name, "ready": len(progress.ready), "desired": group.desired, "states": states}
            )
    if supervisor.health.error:
        problems.append({"temporal": supervisor.health.error})
    problems += [{"routing": mismatch} for mismatch in supervisor.watch.routing_mismatches()]
    if supervisor.shutting_down:
        problems.append({"pool": "shutting down"})
    body = {"healthy": not problems, "pool": supervisor.topology.pool.name, "problems": problems}
    return (200 if not problems else 503), body


class Only(CollectorRegistry):
    """The families of `registry` asked for by name (`name[]=`: a family's name or one of its samples'), as
    prometheus-client's restricted registry answers, for a collector that cannot describe itself in advance."""

    def __init__(self, registry: CollectorRegistry, names: set[str]) -> None:
        super().__init__()
        self.source, self.names = registry, names

    def collect(self) -> Iterator[Metric]:
        for family in self.source.collect():
            if family.name in self.names or any(sample.name in self.names for sample in family.samples):
                yield family


class HttpEndpoint:
    def __init__(self, supervisor: PoolView, address: str) -> None:
        self.supervisor = supervisor
        self.registry = pool_registry(supervisor)
        host, _, port = address.rpartition(":")
        self.host, self.port = host or "127.0.0.1", int(port)

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        try:
            listener = await anyio.create_tcp_listener(local_host=self.host, local_port=self.port)
        except OSError as exc:
            raise PoolError(
                f"pool.metrics: cannot listen on {self.host}:{self.port} ({exc.strerror or exc}); choose a free "
                "port in [pool] metrics of the topology, or remove the key"
            ) from exc
        log.info("http.listening", address=f"{self.host}:{self.port}", routes=["/health", "/metrics"])
        task_status.started()
        async with listener:
            await listener.serve(self._connection)

    def _answer(self, method: str, target: str, headers: dict[str, str]) -> tuple[int, bytes, str]:
        url = urlsplit(target)
        path = url.path
        if method not in ("GET", "HEAD"):
            return 405, b"only GET and HEAD\n", "text/plain; charset=utf-8"
        if path == "/health":
            code, payload = health(self.supervisor)
            return code, json.dumps(payload).encode(), "application/json"
        if path == "/metrics":
            encode, content_type = choose_encoder(headers.get("accept", ""))
            names = parse_qs(url.query).get("name[]")  # Prometheus' own filter, as prometheus-client reads it
            return 200, encode(Only(self.registry, set(names)) if names else self.registry), content_type
        return 404, b"routes: /health /metrics\n", "text/plain; charset=utf-8"

    async def _connection(self, stream: SocketStream) -> None:
        async with stream:
            try:
                with anyio.fail_after(REQUEST_TIMEOUT_S):
                    head = await BufferedByteReceiveStream(stream).receive_until(b"\r\n\r\n", MAX_REQUEST_HEAD)
            except (
                TimeoutError,
                anyio.DelimiterNotFound,
                anyio.EndOfStream,
                anyio.IncompleteRead,
                anyio.BrokenResourceError,
            ):
                return
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            parts = request_line.split()
            method, path = (parts[0], parts[1]) if len(parts) >= 2 else ("", "")
            headers = {}
            for line in header_lines:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if urlsplit(path).path == "/metrics":
                await self.supervisor.fresh()  # every replica's reports and resources read as of this scrape
            status, body, kind = self._answer(method, path, headers)
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}[status]
            response = (
                f"HTTP/1.0 {status} {reason}\r\nContent-Type: {kind}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            ).encode()
            try:
                with anyio.fail_after(REQUEST_TIMEOUT_S):
                    await stream.send(response if method == "HEAD" else response + body)
            except (TimeoutError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                return

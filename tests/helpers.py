"""Helpers for tests that run real worker processes against a real Temporal server."""

from __future__ import annotations

import socket
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
from temporalio.api.enums.v1 import EventType
from temporalio.api.failure.v1 import Failure
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client

PYTHON = sys.executable


def worker_args(
    config: Path, queue: str, scope: str, profile: str | None = None, identity: str | None = None
) -> list[str]:
    args = [PYTHON, "-m", "pipelex_pool", "worker", "--config", str(config), "--task-queue", queue, "--scope", scope]
    if profile:
        args += ["--profile", profile]
    if identity:
        args += ["--identity", identity]
    return args


class NotifyListener:
    """Plays the supervisor's (or systemd's) side of sd_notify: a datagram socket that collects messages."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[str] = []

    def count(self, line: str) -> int:
        return sum(line in message.splitlines() for message in self.messages)

    async def expect(self, line: str, within: float, times: int = 1) -> list[str]:
        """Wait until `times` datagrams holding `line` have arrived in all; returns every message so far."""
        with anyio.fail_after(within):
            while self.count(line) < times:
                await anyio.wait_readable(self.sock)
                self.messages.append(self.sock.recv(4096).decode())
        return self.messages

    def close(self) -> None:
        self.sock.close()
        self.path.unlink(missing_ok=True)


async def history(client: Client, workflow_id: str) -> list[HistoryEvent]:
    return [event async for event in client.get_workflow_handle(workflow_id).fetch_history_events()]


async def completed_activity_types(client: Client, workflow_id: str) -> list[str]:
    events = await history(client, workflow_id)
    scheduled = {
        e.event_id: e.activity_task_scheduled_event_attributes.activity_type.name
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    }
    return [
        scheduled[e.activity_task_completed_event_attributes.scheduled_event_id]
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED
    ]


async def wait_for(predicate: Callable[[], Awaitable[bool]], within: float, what: str, interval: float = 0.2) -> None:
    """Poll an async predicate until it holds; fail the test naming `what` after `within` seconds."""
    try:
        with anyio.fail_after(within):
            while not await predicate():
                await anyio.sleep(interval)
    except TimeoutError as exc:
        raise AssertionError(f"timed out after {within}s waiting for {what}") from exc


async def retried_failures(client: Client, workflow_id: str) -> list[Failure]:
    """Why each retried activity attempt failed: a retry leaves no event of its own, its failure is the next
    attempt's `last_failure`."""
    return [
        e.activity_task_started_event_attributes.last_failure
        for e in await history(client, workflow_id)
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
        and e.activity_task_started_event_attributes.HasField("last_failure")
    ]


def systemd_analyze() -> str:
    """The systemd-analyze program; CI installs it (fails there without it), elsewhere its tests are skipped."""
    import os
    import shutil

    import pytest

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing: .ci/run installs Debian's systemd package")
        pytest.skip("systemd-analyze is not installed (apt-get install systemd); CI installs it")
    return analyze

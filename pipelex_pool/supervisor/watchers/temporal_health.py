"""Whether the Temporal server answers, for /health and status. It only records what it sees: an outage never
stalls the reconcile loop and never marks a worker failed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
from temporalio.api.workflowservice.v1 import GetSystemInfoRequest
from temporalio.client import Client

CHECK_INTERVAL_S = 5.0
CHECK_TIMEOUT_S = 5.0


@dataclass
class TemporalHealth:
    target: str
    error: str | None = "not checked yet"

    async def run(self, client: Callable[[], Awaitable[Client]]) -> None:
        """Ask the server for its system info every few seconds; `client()` connects without retrying."""
        while True:
            try:
                with anyio.fail_after(CHECK_TIMEOUT_S):
                    connected = await client()
                    await connected.workflow_service.get_system_info(GetSystemInfoRequest())
                self.error = None
            except Exception as exc:  # any failure to answer counts as unreachable, and is reported as such
                self.error = f"{self.target}: {exc or type(exc).__name__}"
            await anyio.sleep(CHECK_INTERVAL_S)

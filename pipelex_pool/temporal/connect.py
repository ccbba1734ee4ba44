"""Connect a Temporal client to the server a topology selects."""

from __future__ import annotations

import os
from collections.abc import Callable

import anyio
import structlog
from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.runtime import Runtime

from pipelex_pool.errors import WorkerBootError
from pipelex_pool.topology.temporal_schema import ServerConfig

log = structlog.get_logger("pipelex_pool.supervisor")


def api_key_for(server: ServerConfig) -> str | None:
    """The server's API key, read as its config says; raises WorkerBootError when it cannot be found."""
    if server.api_key_method == "none":
        return None
    if server.api_key_method == "env_var":
        name = server.api_key_id or "TEMPORAL_API_KEY"
        key = os.environ.get(name)
        if not key:
            raise WorkerBootError(f"api_key_method is env_var but ${name} is not set; export it")
        return key
    raise WorkerBootError(
        'api_key_method = "secret_provider" needs Pipelex\'s secret provider, which pipelex-pool does not have; '
        'use "env_var"'
    )


async def connect(
    server: ServerConfig,
    identity: str | None = None,
    runtime: Runtime | None = None,
    converter: DataConverter | None = None,
) -> Client:
    """A client for `server` (an API key implies TLS), on `runtime` (default: the SDK's default runtime), with
    `converter` (the topology's payload codec; default: temporalio's)."""
    api_key = api_key_for(server)
    return await Client.connect(
        server.target_host,
        namespace=server.namespace,
        api_key=api_key,
        tls=api_key is not None,
        identity=identity,
        runtime=runtime,
        data_converter=converter or DataConverter.default,
    )


class LazyClient:
    """One client for the supervisor, connected on first use: `get()` waits (retrying every second) while the
    server boots, `once()` tries a single time. Nothing is marked failed while Temporal does not answer."""

    def __init__(
        self,
        server: ServerConfig,
        identity: str,
        expected_down: Callable[[], bool] = bool,
        converter: DataConverter | None = None,
    ) -> None:
        self.server, self.identity, self.converter = server, identity, converter
        self.expected_down = expected_down  # True while not answering is normal (the pool's dev server boots)
        self._client: Client | None = None

    async def get(self, *, retry: bool = True) -> Client:
        """Logged once per wait, as a warning only when the server should be answering, and when it answers."""
        waited = False
        while self._client is None:
            try:
                self._client = await connect(self.server, self.identity, converter=self.converter)
            except Exception as exc:  # server not up yet: readiness checks wait
                if not retry:
                    raise
                if not waited:
                    expected = self.expected_down()
                    (log.info if expected else log.warning)(
                        "supervisor.temporal_unreachable",
                        target=self.server.target_host,
                        error=str(exc),
                        retry_every_s=1.0,
                        **({"because": "the pool's own dev server is not up yet"} if expected else {}),
                    )
                    waited = True
                await anyio.sleep(1.0)
        if waited:
            log.info("supervisor.temporal_connected", target=self.server.target_host)
        return self._client

    async def once(self) -> Client:
        return await self.get(retry=False)

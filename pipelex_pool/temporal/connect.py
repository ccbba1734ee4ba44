"""Connect a Temporal client to the server a topology selects."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import structlog
from temporalio.client import Client
from temporalio.converter import DataConverter
from temporalio.runtime import Runtime

from pipelex_pool.temporal.certs import diagnose_handshake, explain
from pipelex_pool.temporal.connection import Connection, ConnectionConfigError
from pipelex_pool.ticks import sleep_on_grid

log = structlog.get_logger("pipelex_pool.supervisor")
KEY_CHECK_S = 1.0  # how often the file an API key comes from is looked at (one stat)


async def connect(
    connection: Connection,
    identity: str | None = None,
    runtime: Runtime | None = None,
    converter: DataConverter | None = None,
) -> Client:
    """A client for `connection` (its key and certificates read now), on `runtime` (default: the SDK's default
    runtime), with `converter` (the topology's payload codec; default: temporalio's)."""
    return await Client.connect(
        **connection.connect_kwargs(),
        identity=identity,
        runtime=runtime,
        data_converter=converter or DataConverter.default,
    )


def named_problem(connection: Connection, exc: BaseException) -> str | None:
    """What a failed connect says about TLS or credentials, named with what to fix (None: an outage, worth a
    retry). Asks the server itself with a TLS handshake when the Rust stack only saw the connection break."""
    if isinstance(exc, ConnectionConfigError):
        return str(exc)
    text = str(exc)
    named = explain(connection, text)
    broken = any(sign in text for sign in ("transport error", "BrokenPipe", "h2 protocol error", "connection closed"))
    if named is None and (connection.tls is not None or broken):
        named = diagnose_handshake(connection)  # a TCP connect that fails at once when the server is just down
    return named


class LazyClient:
    """One client for the supervisor, connected on first use: `get()` waits (retrying every second) while the
    server boots, `once()` tries a single time. Nothing is marked failed while Temporal does not answer."""

    def __init__(
        self,
        connection: Connection,
        identity: str,
        expected_down: Callable[[], bool] = bool,
        converter: DataConverter | None = None,
    ) -> None:
        self.connection, self.identity, self.converter = connection, identity, converter
        self.problem: str | None = None  # a named TLS or credentials problem of the last failed connect
        self._following: anyio.CancelScope | None = None
        self.expected_down = expected_down  # True while not answering is normal (the pool's dev server boots)
        self._client: Client | None = None

    async def get(self, *, retry: bool = True) -> Client:
        """Logged once per wait, as a warning only when the server should be answering, and when it answers."""
        waited = False
        while self._client is None:
            try:
                self._client = await connect(self.connection, self.identity, converter=self.converter)
            except Exception as exc:  # server not up yet: readiness checks wait
                problem = await anyio.to_thread.run_sync(named_problem, self.connection, exc)
                if problem is not None and problem != self.problem:
                    log.error("supervisor.temporal_refused", target=self.connection.address, problem=problem)
                self.problem = problem
                if not retry:
                    raise
                if not waited and problem is None:
                    expected = self.expected_down()
                    (log.info if expected else log.warning)(
                        "supervisor.temporal_unreachable",
                        target=self.connection.address,
                        error=str(exc),
                        retry_every_s=1.0,
                        **({"because": "the pool's own dev server is not up yet"} if expected else {}),
                    )
                    waited = True
                await anyio.sleep(1.0)
        self.problem = None
        if waited:
            log.info("supervisor.temporal_connected", target=self.connection.address)
        return self._client

    async def once(self) -> Client:
        return await self.get(retry=False)

    def update(self, connection: Connection) -> str:
        """Take a reloaded connection: a new API key is set on the live client (temporalio sends it with the
        next call, no reconnect); new certificates or another address mean a new client. Says what it did."""
        old, self.connection = self.connection, connection
        client = self._client
        if self._following is not None:
            self._following.cancel()  # follow the new connection's key source
        if client is None:
            return "not connected yet: the next connect uses the new settings"
        same_place = (old.address, old.namespace) == (connection.address, connection.namespace)
        if not same_place or old.tls_fingerprint != connection.tls_fingerprint or old.api_key != connection.api_key:
            self._client = None
            return "reconnecting with the new settings"
        if self.refresh_key():
            return "new API key applied in place"
        return "unchanged"

    async def follow_key(self) -> None:
        """The supervisor's client follows its key file (follow_key), across reloads."""
        while True:
            client = await self.get()
            with anyio.CancelScope() as self._following:
                await follow_key(self.connection, client, "supervisor.api_key_rotated")
                await anyio.sleep_forever()  # a key that cannot change: until a reload brings another source

    def refresh_key(self) -> bool:
        """Re-read the API key from its source and apply it if it changed; True when it did."""
        client, source = self._client, self.connection.api_key
        if client is None or source is None:
            return False
        key = source.read()
        if key == client.api_key:
            return False
        client.api_key = key
        return True


def _signature(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


async def follow_key(connection: Connection, client: Client, event: str) -> None:
    """Keep `client`'s API key equal to its file's (`[pool] api_key_file`, or the temporal.toml profile it came
    from): one stat every KEY_CHECK_S, the key re-read on a change and set in place (temporalio sends it with the
    next call; nothing reconnects). A key from an environment variable cannot change in a running process."""
    source = connection.api_key
    path = source.watched_file() if source else None
    if source is None or path is None:
        return
    seen = _signature(path)
    while True:
        await sleep_on_grid(KEY_CHECK_S)
        now = _signature(path)
        if now == seen:
            continue
        seen = now
        try:
            key = source.read()
        except ConnectionConfigError as exc:  # mid-rewrite, or removed: keep the key in use and say so
            log.warning("api_key.unreadable", by=event, source=source.describe(), error=str(exc))
            continue
        if key != client.api_key:
            client.api_key = key
            log.info(event, source=source.describe())


async def check_once(connection: Connection, within: float = 10.0) -> str:
    """Connect once and ask the server who it is and whether the namespace exists: what `validate
    --check-connection` reports. Raises ConnectionConfigError with the named problem (or the plain error)."""
    from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest, GetSystemInfoRequest

    try:
        with anyio.fail_after(within):
            client = await connect(connection, identity="pipelex-pool/check-connection")
            info = await client.workflow_service.get_system_info(GetSystemInfoRequest())
            await client.workflow_service.describe_namespace(DescribeNamespaceRequest(namespace=connection.namespace))
    except TimeoutError as exc:
        raise ConnectionConfigError(f"{connection.address} did not answer within {within:.0f} s") from exc
    except Exception as exc:
        problem = await anyio.to_thread.run_sync(named_problem, connection, exc)
        raise ConnectionConfigError(problem or " ".join(str(exc).split())[:400]) from exc
    version = info.server_version or "unknown version"
    return f"connected: Temporal {version} at {connection.address}, namespace {connection.namespace} exists"

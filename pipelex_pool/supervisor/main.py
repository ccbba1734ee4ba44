"""`pipelex-pool up`: prepare the pool's directories, take its lock, clean up after a crashed predecessor, decide
on the embedded dev server, and run the supervisor."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import anyio
import structlog
from temporalio.service import RPCError, RPCStatusCode

from pipelex_pool.contract import EVENTS_LOG
from pipelex_pool.control.server import ControlServer
from pipelex_pool.errors import PoolError
from pipelex_pool.logs import EVENT_FILE
from pipelex_pool.paths import PoolPaths, check_socket_path, private_dir, resolve_paths, runtime_base
from pipelex_pool.supervisor.deploy.record import ASK_WITHIN_S, recorded_current, temporal_current
from pipelex_pool.supervisor.lock import PoolLock, stop_leftovers
from pipelex_pool.supervisor.loop import Supervisor
from pipelex_pool.supervisor.spawning.fork_spawner import ForkSpawner
from pipelex_pool.supervisor.spawning.server_process import ServerProcess
from pipelex_pool.supervisor.spawning.spawner import ExecSpawner, Spawner
from pipelex_pool.temporal.connect import connect, named_problem
from pipelex_pool.temporal.connection import ConnectionConfigError
from pipelex_pool.temporal.devserver import is_local, port_answers
from pipelex_pool.topology.load import Topology
from pipelex_pool.topology.snapshot import write_validated

log = structlog.get_logger("pipelex_pool.supervisor")
PREFLIGHT_S = 10.0  # `up`'s one connect before starting: longer means an outage, waited out as usual


def wants_dev_server(topology: Topology) -> bool:
    """`enabled = "auto"`: only for a local plain-text address where no server answers yet."""
    address = topology.connection.address
    enabled = topology.dev_server.enabled
    if enabled is False:
        return False
    if not is_local(address) or topology.connection.tls is not None:
        if enabled is True:
            raise PoolError(
                f"[dev_server] enabled = true, but the pool connects to {topology.connection.summary()} "
                f"(from {topology.connection.origins.get('address', 'built-in')}), which the embedded dev server "
                'cannot be (it listens on loopback, without TLS); select a local server or set enabled = "auto"'
            )
        return False
    answering = port_answers(address)
    if enabled is True and answering:
        raise PoolError(
            f"[dev_server] enabled = true, but {address} is already in use; stop what listens there, "
            'or set enabled = "auto" to use it'
        )
    if answering:
        log.info("devserver.not_needed", target=address, reason="a server already answers")
    return not answering


async def check_reachable(topology: Topology) -> None:
    """Connect once before anything starts: a TLS or credentials problem (which no retry fixes) refuses the
    start, named; a server that does not answer (yet) is waited out by the pool, as always."""
    connection = topology.connection
    if connection.api_key is not None:
        try:
            connection.api_key.read()
        except ConnectionConfigError as exc:
            raise PoolError(f"cannot connect to Temporal ({connection.summary()}): {exc}") from exc
    if not port_answers(connection.address):
        return
    try:
        with anyio.fail_after(PREFLIGHT_S):
            await connect(connection, identity=f"{topology.pool.name}/preflight")
    except Exception as exc:
        problem = await anyio.to_thread.run_sync(named_problem, connection, exc)
        if problem is not None:
            raise PoolError(f"cannot connect to Temporal ({connection.summary()}): {problem}") from exc
        log.warning("supervisor.preflight_failed", target=connection.address, error=str(exc) or type(exc).__name__)


def prepare_paths(topology: Topology) -> PoolPaths:
    paths = resolve_paths(topology.pool, topology.file.parent)
    check_socket_path(paths.socket)
    private_dir(paths.runtime_dir)
    private_dir(paths.notify_dir)
    longest = max((len(name) for name in topology.groups), default=0)
    check_socket_path(paths.notify_dir / f"{'x' * longest}-999-99999.sock")
    for directory in (paths.state_dir, paths.log_dir):
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    old = runtime_base(topology.pool.name, os.environ)  # where state and logs were before they moved
    moved = old / "state" != paths.state_dir and not (paths.state_dir / "temporal.db").exists()
    if moved and (old / "state" / "temporal.db").exists():
        log.warning(
            "paths.state_moved",
            old=str(old),
            new=str(paths.state_dir),
            why="state and logs moved out of the runtime directory, which a logout or reboot wipes",
            fix=f"with the pool down: mv {old}/state/* {paths.state_dir}/ && mv {old}/logs/* {paths.log_dir}/",
        )
    return paths


async def with_deployed_build(topology: Topology, state_dir: Path) -> Topology:
    """`topology` with the build a deploy made current since the file was written, if Temporal still routes to it
    (or cannot be asked now); otherwise as it is. Says which build it starts and why."""
    pool = topology.pool
    recorded = recorded_current(state_dir)
    if pool.deployment is None or recorded is None or recorded.deployment != pool.deployment:
        return topology
    if recorded.build_id == pool.build_id:
        return topology
    try:
        with anyio.fail_after(ASK_WITHIN_S):
            client = await connect(topology.connection)
        current = await temporal_current(client, pool.deployment)
    except RPCError as exc:
        if exc.status is not RPCStatusCode.NOT_FOUND:
            return _deployed(topology, recorded.build_id, f"Temporal could not be asked ({exc.message})")
        current = None
    except Exception as exc:  # unreachable (or the pool's own dev server, not started yet): the record is all we know
        return _deployed(topology, recorded.build_id, f"Temporal could not be asked ({str(exc) or type(exc).__name__})")
    if current == recorded.build_id:
        return _deployed(topology, recorded.build_id, "it is Temporal's current version")
    log.warning(
        "supervisor.deployed_build_not_current",
        recorded=recorded.build_id,
        temporal_current=current,
        starting=pool.build_id,
        why="Temporal no longer routes to the recorded build: the file's build_id is started",
    )
    return topology


def _deployed(topology: Topology, build: str, why: str) -> Topology:
    log.warning(
        "supervisor.build_from_last_deploy",
        build_id=build,
        file_build_id=topology.pool.build_id,
        why=f"deployed by `pipelex-pool deploy` since the file was written, and {why}",
        fix=f"set build_id = {build!r} in {topology.file} to make it the file's",
    )
    return replace(topology, pool=topology.pool.model_copy(update={"build_id": build}))


async def serve_pool(topology: Topology, early: ServerProcess | None = None) -> int:
    """Run the pool in the foreground until SIGTERM/SIGINT (or `down`); 0 after a clean drain. `early`: a fork
    server `up` started before validating (used if it is what the topology wants)."""
    paths = prepare_paths(topology)
    lock = PoolLock(paths.lock, topology.pool.name)
    lock.acquire()
    EVENT_FILE.open(paths.log_dir / EVENTS_LOG, topology.pool.log_max_bytes, topology.pool.log_backups)
    try:
        for record in stop_leftovers(paths.state_file):
            log.warning("supervisor.leftover_stopped", name=record.name, pid=record.pid)
        topology = replace(topology, validated_file=write_validated(topology, paths.state_dir))
        dev_server = wants_dev_server(topology)
        if not dev_server:
            await check_reachable(topology)
        topology = await with_deployed_build(topology, paths.state_dir)
        spawner: Spawner = ExecSpawner()
        if topology.pool.spawner == "fork":
            spawner = ForkSpawner(preload=topology.preload, early=early)
        elif early is not None:
            early.sock.close()  # (it exits on EOF)
        supervisor = Supervisor(topology, paths, dev_server=dev_server, spawner=spawner)
        async with anyio.create_task_group() as tg:
            await tg.start(ControlServer(supervisor, paths.socket).serve)
            if topology.pool.metrics:  # (prometheus_client is loaded only then: 7 MiB)
                from pipelex_pool.control.http import HttpEndpoint

                await tg.start(HttpEndpoint(supervisor, topology.pool.metrics).serve)
            try:
                await supervisor.run()
            finally:
                await spawner.aclose()
            tg.cancel_scope.cancel()
    finally:
        paths.state_file.unlink(missing_ok=True)
        lock.release()
    log.info("supervisor.exit", pid=os.getpid())
    EVENT_FILE.close()
    return 0

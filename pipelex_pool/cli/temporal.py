"""`pipelex-pool` commands that talk to Temporal directly: namespace set-up and load tests."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from pipelex_pool.cli.base import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from pipelex_pool.contract import CONFIG_ENV
from pipelex_pool.errors import TopologyError
from pipelex_pool.finalization import exit_skipping_finalization


def load_or_exit(topology: Path | None, *, read_connection_files: bool = True) -> Any:
    """The topology named by -c (or $PIPELEX_POOL_CONFIG), validated; exit 2 with the errors otherwise."""
    from pipelex_pool.topology.load import load_topology

    path = topology or (Path(os.environ[CONFIG_ENV]) if os.environ.get(CONFIG_ENV) else None)
    if path is None:
        click.echo("pipelex-pool: name the topology with -c TOPOLOGY (or set $PIPELEX_POOL_CONFIG)", err=True)
        sys.exit(EXIT_USAGE)
    try:
        return load_topology(path, read_connection_files=read_connection_files)
    except TopologyError as exc:
        click.echo(str(exc), err=True)
        sys.exit(EXIT_USAGE)


async def connect_or_exit(loaded: Any, quiet_core: bool = False, wait_s: float = 0.0) -> Any:
    """A client of the topology's selected server; `quiet_core`: without the SDK core's own log lines (it prints
    each retried request on stdout, which would break --json; the caller reports outages itself). `wait_s`: how
    long a server that does not answer (yet) is waited for, saying so once; a TLS or credentials problem ends it
    at once, named."""
    import time

    import anyio
    from temporalio.runtime import Runtime, TelemetryConfig

    from pipelex_pool.temporal.codec import data_converter
    from pipelex_pool.temporal.connect import connect, named_problem

    connection = loaded.connection
    runtime = Runtime(telemetry=TelemetryConfig(logging=None)) if quiet_core else None
    converter = data_converter(loaded.temporal.payload_codec_config)
    started, said = time.monotonic(), False
    while True:
        try:
            return await connect(connection, runtime=runtime, converter=converter)
        except Exception as exc:  # report which server could not be reached and stop: nothing was changed
            problem = await anyio.to_thread.run_sync(named_problem, connection, exc)
            if problem is None and time.monotonic() - started < wait_s:
                if not said:
                    click.echo(
                        f"pipelex-pool: Temporal ({connection.summary()}) does not answer yet; waiting up to "
                        f"{wait_s:.0f}s ({' '.join(str(exc).split())[:200]})",
                        err=True,
                    )
                    said = True
                await anyio.sleep(1.0)
                continue
            click.echo(f"pipelex-pool: cannot connect to Temporal ({connection.summary()}): {problem or exc}", err=True)
            exit_skipping_finalization(EXIT_FAILED)


@main.command("setup-namespace")
@click.option("-c", "--config", "topology", type=click.Path(path_type=Path), help="Topology (its selected server).")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print the equivalent `temporal operator` commands from the file alone (no server asked, nothing changed).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def setup_namespace(topology: Path | None, dry_run: bool, as_json: bool) -> None:
    """Register the custom search attributes (PipeCode, PipelineRunId, SessionId, UserId, DomainCode: Keyword).

    Idempotent: a second run changes nothing and says so. A permission error prints what an admin must run.
    """
    import anyio
    from temporalio.service import RPCError, RPCStatusCode

    from pipelex_pool.temporal.namespace import NamespacePlan, apply_namespace, plan_namespace

    loaded = load_or_exit(topology)
    attributes = list(loaded.temporal.search_attributes.attributes)
    address = loaded.connection.cli_flags()
    if dry_run and loaded.temporal.search_attributes.enabled:  # the plan from the file alone: no server, no key
        plan = NamespacePlan(loaded.connection.namespace, attributes, missing=list(attributes))
        if as_json:
            click.echo(json.dumps({**plan.as_dict(), "dry_run": True, "server_asked": False,
                                   "commands": plan.commands(address)}, indent=2))  # fmt: skip
        else:
            click.echo(f"# from {loaded.file} alone (the server was not asked which already exist):", err=True)
            click.echo("\n".join(plan.commands(address)))
        return

    async def run() -> int:
        client = await connect_or_exit(loaded)
        plan = await plan_namespace(client, attributes)
        if as_json:
            click.echo(json.dumps({**plan.as_dict(), "dry_run": False, "commands": plan.commands(address)}, indent=2))
        for name, kind in plan.conflicts.items():
            click.echo(f"search attribute {name} exists as {kind}, not Keyword: an admin must resolve it", err=True)
        if not plan.missing:
            if not as_json:
                click.echo(
                    f"namespace {plan.namespace}: all {len(plan.present)} search attributes present; nothing to do"
                )
            return EXIT_FAILED if plan.conflicts else EXIT_OK
        try:
            await apply_namespace(client, plan)
        except RPCError as exc:
            if exc.status is RPCStatusCode.PERMISSION_DENIED:
                click.echo(
                    f"permission denied ({exc}); an admin must run:\n" + "\n".join(plan.commands(address)), err=True
                )
                return EXIT_FAILED
            raise
        if not as_json:
            click.echo(f"namespace {plan.namespace}: created {', '.join(plan.missing)}")
        return EXIT_FAILED if plan.conflicts else EXIT_OK

    if not loaded.temporal.search_attributes.enabled:
        click.echo("[temporal.search_attributes] enabled = false: nothing to do")
        return
    exit_skipping_finalization(anyio.run(run))


@main.command()
@click.argument("topology", type=click.Path(path_type=Path))
@click.option("--runs", default=100, show_default=True, type=click.IntRange(min=1), help="Pipe runs to submit.")
@click.option("--concurrency", default=10, show_default=True, type=click.IntRange(min=1), help="Runs in flight.")
@click.option("--mix", "mix_file", type=click.Path(path_type=Path), help="TOML: parallel = bool and [[steps]].")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def loadtest(topology: Path, runs: int, concurrency: int, mix_file: Path | None, as_json: bool) -> None:
    """Submit simulated pipe runs through a running pool; report throughput, latency p50/p95/p99, retries and
    failures per queue, cross-checked against Temporal's count of completed executions.

    The runs use the simulated task packs (pipelex_pool.sim): a load model, not LLM calls.
    """
    import anyio

    from pipelex_pool.errors import PoolError
    from pipelex_pool.sim.loadtest import OUTAGE_LIMIT_S, default_mix, load_mix, run_loadtest

    loaded = load_or_exit(topology)
    try:
        mix = load_mix(mix_file) if mix_file else default_mix(loaded)
    except (PoolError, TopologyError) as exc:
        click.echo(f"pipelex-pool loadtest: {exc}", err=True)
        sys.exit(EXIT_USAGE)

    async def run() -> int:
        # an outage that starts before the first connect is ridden out like one during the test
        client = await connect_or_exit(loaded, quiet_core=True, wait_s=OUTAGE_LIMIT_S)
        with click.progressbar(length=runs, label="pipe runs", file=sys.stderr) as bar:
            report = await run_loadtest(client, loaded, runs, concurrency, mix, lambda: bar.update(1))
        data = report.as_dict()
        if as_json:
            click.echo(json.dumps(data, indent=2))
        else:
            click.echo(render_loadtest(data))
        complete = data["failed"] == 0 and data["unfinished"] == 0
        return EXIT_OK if complete and data["temporal_completed"] == data["completed"] else EXIT_FAILED

    exit_skipping_finalization(anyio.run(run))


def render_loadtest(data: dict[str, Any]) -> str:
    latency = data["run_latency"]
    lines = [
        f"load test {data['loadtest_id']}: {data['completed']}/{data['runs']} runs completed, {data['failed']} failed, "
        f"in {data['wall_s']:.1f}s ({data['runs_per_second']} runs/s, concurrency {data['concurrency']})",
        f"Temporal counts {data['temporal_completed']} completed executions for this load test"
        if data["temporal_completed"] is not None
        else "Temporal did not answer the count of completed executions",
        f"run latency: p50 {latency['p50_s']}s  p95 {latency['p95_s']}s  p99 {latency['p99_s']}s",
        "",
        f"{'QUEUE':<24}{'ACTIVITIES':>11}{'PER S':>8}{'P50 S':>9}{'P95 S':>9}{'P99 S':>9}{'RETRIES':>9}",
    ]
    for queue, q in data["queues"].items():
        lines.append(
            f"{queue:<24}{q['activities']:>11}{q['per_second']:>8}{q['p50_s']:>9}{q['p95_s']:>9}{q['p99_s']:>9}{q['retries']:>9}"
        )
    outage = data["temporal_unreachable"]
    if outage["retries"]:
        lines.append(
            f"Temporal out of reach: {outage['retries']} request(s) retried over {outage['seen_for_s']}s "
            f"({'; '.join(outage['errors'])}); {data['unfinished']} run(s) with no known outcome"
        )
    lines += [f"failure: {f}" for f in data["failures"]]
    return "\n".join(lines)


@main.group()
def codec() -> None:
    """Pipelex's payload codec ([temporal.payload_codec_config]) outside the workers."""


@codec.command("serve")
@click.option("-c", "--config", "topology", type=click.Path(path_type=Path), help="Topology (its payload codec).")
@click.option("--listen", default="127.0.0.1:8081", show_default=True, help="HOST:PORT to serve on.")
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    default=["http://localhost:8233", "http://127.0.0.1:8233"],
    show_default=True,
    help="Origin of the Temporal Web UI allowed to call it (repeat; * for any).",
)
def codec_serve(topology: Path | None, listen: str, cors_origins: tuple[str, ...]) -> None:
    """Serve the codec endpoint Temporal's Web UI calls (POST /decode, /encode) to show offloaded payloads.

    Point the UI at it (its "Codec Server" setting, or `temporal server start-dev --ui-codec-endpoint URL`), or
    the CLI (`temporal workflow show --codec-endpoint URL`). It reads the payload store: keep it on loopback.
    """
    from pipelex_pool.errors import PoolError
    from pipelex_pool.temporal.codec import StoragePayloadCodec, store_for
    from pipelex_pool.temporal.codec_server import CodecServer
    from pipelex_pool.units import parse_address

    loaded = load_or_exit(topology)
    config = loaded.temporal.payload_codec_config
    if not config.is_enabled:
        click.echo(f"pipelex-pool codec serve: {loaded.file}: payload_codec_config.is_enabled is false", err=True)
        sys.exit(EXIT_USAGE)
    try:
        address = parse_address(listen)
        codec = StoragePayloadCodec(store_for(config), config.size_threshold, config.storage_prefix)
    except (ValueError, PoolError) as exc:
        click.echo(f"pipelex-pool codec serve: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    host, _, port = address.rpartition(":")
    try:
        server = CodecServer((host, int(port)), codec, list(cors_origins))
    except OSError as exc:
        click.echo(f"pipelex-pool codec serve: cannot listen on {address}: {exc.strerror}", err=True)
        sys.exit(EXIT_FAILED)
    click.echo(f"codec endpoint on http://{address} ({codec.store.where}); Ctrl-C to stop", err=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()

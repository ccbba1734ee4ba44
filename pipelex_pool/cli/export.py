"""`pipelex-pool export k8s|systemd` (the topology for other runners) and `pipelex-pool probe` (the health
check those runners call)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from pipelex_pool.cli.base import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main
from pipelex_pool.units import parse_duration


@main.group()
def export() -> None:
    """Write the topology as Kubernetes manifests or systemd units (validated first, as `up` would)."""


@export.command("k8s")
@click.argument("topology", type=click.Path(path_type=Path))
@click.option("--image", default="pipelex-pool:latest", show_default=True, help="Image with pipelex-pool and your app.")
@click.option("--namespace", help="Kubernetes namespace of every object (default: none, kubectl's current one).")
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write one file per object into this directory.")
def export_k8s(topology: Path, image: str, namespace: str | None, output: Path | None) -> None:
    """Kubernetes manifests: a Deployment per group, the topology in a ConfigMap, KEDA ScaledObjects for
    autoscaled groups. YAML on stdout, or files with -o."""
    from pipelex_pool.cli.temporal import load_or_exit
    from pipelex_pool.errors import PoolError
    from pipelex_pool.export.k8s import k8s_manifests, k8s_warnings, write_manifests

    loaded = load_or_exit(topology, read_connection_files=False)  # made where the certificates may not be
    try:
        manifests = k8s_manifests(loaded, image, namespace)
        warnings = k8s_warnings(loaded)
    except PoolError as exc:
        click.echo(f"pipelex-pool export k8s: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    text = write_manifests(manifests, output)
    if text:
        click.echo(text, nl=False)
    for warning in warnings:
        click.echo(f"pipelex-pool export k8s: note: {warning}", err=True)
    if output is not None:
        click.echo(f"wrote {len(manifests)} manifests to {output}", err=True)


@export.command("systemd")
@click.argument("topology", type=click.Path(path_type=Path))
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write the units into this directory.")
@click.option(
    "--bin",
    "program",
    default="/opt/pipelex-pool/bin/pipelex-pool",
    show_default=True,
    help="The installed pipelex-pool program.",
)
@click.option(
    "--config-path", help="Where the topology is installed (default: /etc/pipelex-pool/<file name of TOPOLOGY>)."
)
@click.option("--user", default="pipelex-pool", show_default=True, help="The account the workers run as.")
def export_systemd(topology: Path, output: Path | None, program: str, config_path: str | None, user: str) -> None:
    """One template unit per group (<pool>-<group>@N.service) and <pool>.target starting every replica."""
    from pipelex_pool.cli.temporal import load_or_exit
    from pipelex_pool.errors import PoolError
    from pipelex_pool.export.systemd_units import systemd_units

    loaded = load_or_exit(topology, read_connection_files=False)  # made where the certificates may not be
    try:
        units = systemd_units(loaded, program, config_path or f"/etc/pipelex-pool/{topology.name}", user)
    except PoolError as exc:
        click.echo(f"pipelex-pool export systemd: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    if output is None:
        for name, text in units.items():
            click.echo(f"# ---- {name} ----\n{text}")
        return
    output.mkdir(parents=True, exist_ok=True)
    for name, text in units.items():
        (output / name).write_text(text)
    target = next(name for name in units if name.endswith(".target"))
    click.echo(f"wrote {', '.join(units)} to {output}; then: systemctl enable --now {target}", err=True)


@main.command()
@click.option("--file", "path", type=click.Path(path_type=Path), envvar="PIPELEX_POOL_HEALTH_FILE",
              required=True, help="The worker's health file (default: $PIPELEX_POOL_HEALTH_FILE).")  # fmt: skip
@click.option("--ready", "mode", flag_value="ready", default=True, help="Polling and not draining (readiness).")
@click.option("--alive", "mode", flag_value="alive", help="Running, draining included (liveness).")
@click.option(
    "--max-age", default="30s", show_default=True, help="How old the file may be (it is rewritten every 5 s)."
)
def probe(path: Path, mode: str, max_age: str) -> None:
    """Exit 0 when the worker that keeps FILE is ready (Temporal lists it polling, no drain started) or, with
    --alive, alive (its event loop rewrote the file within --max-age); 1 otherwise, saying why. For Kubernetes
    probes (see `export k8s`)."""
    try:
        limit = parse_duration(max_age).total_seconds()
        age = time.time() - path.stat().st_mtime
        state = path.read_text().split()[0] if path.stat().st_size else ""
    except FileNotFoundError:
        click.echo(f"not {mode}: {path} does not exist (the worker is starting, or not polling yet)", err=True)
        sys.exit(EXIT_FAILED)
    except (OSError, ValueError) as exc:
        click.echo(f"not {mode}: {path}: {exc}", err=True)
        sys.exit(EXIT_FAILED)
    if age > limit:
        click.echo(f"not {mode}: {path} is {age:.0f}s old (over {max_age}): the worker is hung or gone", err=True)
        sys.exit(EXIT_FAILED)
    if mode == "ready" and state != "ready":
        click.echo(f"not ready: the worker is {state or 'in no known state'}", err=True)
        sys.exit(EXIT_FAILED)
    sys.exit(EXIT_OK)

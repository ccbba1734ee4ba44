"""`pipelex-pool top`: the live view in the terminal, or (`--serve`) the same view as a web page."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from pipelex_pool.cli.base import EXIT_USAGE, main

SERVE_PORT = 8722  # beside the metrics port the shipped files suggest (9721), clear of Temporal's UI (8233)


@main.command()
@click.option("-c", "--config", "topology", type=click.Path(path_type=Path), help="Find the pool of this topology.")
@click.option(
    "--socket", "socket_path", type=click.Path(path_type=Path), help="Control socket (or $PIPELEX_POOL_SOCKET)."
)
@click.option("--pool", "pool_name", help="The pool of this name (when several run for this user).")
@click.option("--serve", is_flag=True, help="Serve the view as a web page (needs the [web] extra) instead.")
@click.option("--host", default="127.0.0.1", show_default=True, help="With --serve: the address to listen on.")
@click.option("--port", default=SERVE_PORT, show_default=True, type=int, help="With --serve: the port.")
def top(
    topology: Path | None, socket_path: Path | None, pool_name: str | None, serve: bool, host: str, port: int
) -> None:
    """A live view of the pool: replicas (state, pid, uptime, restarts, in flight, CPU, RSS, last exit), queues
    (backlog, age, pollers, trend), the latest events, the selected replica's attempts and log. Keys: r restart,
    s scale, x stop, t start, p pause/resume the selected replica's group, f restart FATAL replicas (each asks
    first), q quit.

    Fed by the pool (a subscription over its control socket: the status when it changes, events as they happen).
    With --serve, each browser that opens http://HOST:PORT gets the same view (it runs `top` for that browser).
    """
    from pipelex_pool.control.client import resolve_socket

    socket = resolve_socket(socket_path, topology, pool=pool_name)
    if serve:
        try:
            from textual_serve.server import Server
        except ImportError:
            click.echo('pipelex-pool top --serve: needs textual-serve: pip install "pipelex-pool[web]"', err=True)
            sys.exit(EXIT_USAGE)
        command = shlex.join([sys.executable, "-m", "pipelex_pool", "top", "--socket", str(socket)])
        click.echo(f"pipelex-pool top: serving the view of {socket} on http://{host}:{port}", err=True)
        Server(command, host=host, port=port, title=f"pipelex-pool top ({socket})").serve()
        return
    from pipelex_pool.top.app import Top

    Top(socket).run()

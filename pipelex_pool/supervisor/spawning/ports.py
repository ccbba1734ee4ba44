"""Ports for the replicas' Temporal SDK metrics (`[pool] worker_metrics = "host:first-last"`)."""

from __future__ import annotations

import socket
from collections.abc import Iterable

from pipelex_pool.units import split_port_range


def pick_port(host: str, ports: range, taken: Iterable[int]) -> int | None:
    """The lowest port of `ports` that no live replica holds and that can be bound now (None: the range is full)."""
    busy = set(taken)
    for port in ports:
        if port in busy:
            continue
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError:  # held by something outside the pool
                continue
        return port
    return None


def pick_address(port_range: str, given: list[str]) -> str | None:
    """The "host:port" for a replica's SDK metrics: the lowest port of the range that no address in `given`
    holds (and nothing else listens on); None when the range is full."""
    host, ports = split_port_range(port_range)
    port = pick_port(host, ports, [int(address.rpartition(":")[2]) for address in given])
    return None if port is None else f"{host}:{port}"

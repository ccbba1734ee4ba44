"""What observers tell the reconcile loop. Only the loop acts on them."""

from __future__ import annotations

from dataclasses import dataclass

from pipelex_pool.supervisor.handle import ProcessHandle


@dataclass(frozen=True)
class Notified:
    """An sd_notify datagram from a child (READY=1, WATCHDOG=1, STOPPING=1, STATUS=...)."""

    handle: ProcessHandle
    generation: int
    fields: dict[str, str]


@dataclass(frozen=True)
class SeenReady:
    """A readiness check outside the child (polling seen in Temporal, dev server serving) succeeded."""

    handle: ProcessHandle
    generation: int


@dataclass(frozen=True)
class Exited:
    handle: ProcessHandle
    generation: int
    returncode: int


@dataclass(frozen=True)
class Wake:
    """Desired state changed (signal or control command): reconcile now."""

    reason: str


Event = Notified | SeenReady | Exited | Wake

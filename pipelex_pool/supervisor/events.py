"""What arrives on the reconcile loop's stream: observers' reports about processes, and requests. Only the loop
acts on them, at one point of each iteration."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anyio

from pipelex_pool.errors import RequestRefused
from pipelex_pool.supervisor.desired.requests import Request
from pipelex_pool.supervisor.process.handle import ProcessHandle
from pipelex_pool.supervisor.process.usage import Usage


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
    last_line: str = ""  # the last line of its output (shown with a failed exit)


@dataclass(frozen=True)
class ReportsDue:
    """A wake-up of the loop for the replicas' reports noted meanwhile (Inbox.note): it carries nothing itself."""


@dataclass(frozen=True)
class Sampled:
    """The resource sampler's reading of the replicas' processes (usage None: the process is gone)."""

    readings: tuple[tuple[ProcessHandle, int, Usage | None], ...]  # (handle, its pid when sampled, usage)


@dataclass(frozen=True)
class HandedBack:
    """A dead replica's in-flight attempts were handed back to Temporal (or refused by it)."""

    group: str
    reason: str  # why the process ended, as a metrics label: killed, killed_by_pool, signal, exit
    handed_back: int
    refused: int
    failed: int


@dataclass(frozen=True)
class RunsHandedBack:
    """The workflow runs a dead replica held in its cache were moved off its sticky queue (or were already done)."""

    group: str
    moved: int
    finished: int  # the run had ended or was gone: nothing to move
    failed: int  # Temporal did not answer in time: the run waits for the sticky timeout


@dataclass(eq=False)
class Submitted:
    """A request on its way to the loop; whoever submitted it may wait for `applied`."""

    request: Request
    applied: anyio.Event = field(default_factory=anyio.Event)
    answer: Any = None
    refused: RequestRefused | None = None

    def settle(self, answer: Any = None, refused: RequestRefused | None = None) -> None:
        self.answer, self.refused = answer, refused
        self.applied.set()


@dataclass(eq=False)
class Look:
    """Someone looks at the pool (status, the live view, /metrics): the loop reads every replica's reports and
    resources now, then sets `done`."""

    done: anyio.Event = field(default_factory=anyio.Event)


ProcessEvent = Notified | SeenReady | Exited
Event = ProcessEvent | Sampled | HandedBack | RunsHandedBack | Submitted | ReportsDue | Look

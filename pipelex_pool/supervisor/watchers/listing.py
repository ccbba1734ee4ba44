"""Whether Temporal lists a starting replica among its queue's pollers: what makes a pool worker READY (it says
it polls; the pool confirms Temporal sees it), and a `readiness = "temporal"` group's command.

One watcher for every starting replica: each wave asks about every partition of every queue a starting replica
polls, all side by side, and marks READY whoever it finds. A 64-replica start asks ~16 questions a wave, not 64
workers each their own (which cost the dev server more CPU than the pool's own start and could trip the namespace's
rate limit). While Temporal does not answer, a pool worker is shown waiting for it (an outage is not a failed
start); the replica's start_timeout bounds the rest."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

import anyio
import structlog
from anyio.abc import ObjectSendStream
from temporalio.client import Client

from pipelex_pool.contract import WAITING_KEY
from pipelex_pool.supervisor.events import Event, Notified, SeenReady
from pipelex_pool.supervisor.process.handle import ProcessHandle
from pipelex_pool.supervisor.process.state import ProcState
from pipelex_pool.temporal.pollers import Poller, QueueType, queue_pollers, side_by_side

log = structlog.get_logger("pipelex_pool.supervisor")
GATHER_S = 0.05  # after a first expectation: the others of the same batch of starts join the same wave
WAVE_S = 0.25  # between waves while a replica expected for less than SLOW_AFTER_S is not listed yet
SLOW_WAVE_S = 1.0  # ... and once every one left has waited longer (its polls refused, Temporal away)
SLOW_AFTER_S = 5.0

Question = tuple[str, QueueType]  # (task queue, type)


@dataclass(frozen=True)
class Expected:
    handle: ProcessHandle
    generation: int
    queue: str
    types: frozenset[QueueType]
    identity: str
    pid_prefix: str | None  # a command's worker that kept temporalio's `<pid>@<host>` identity is recognised too
    command: bool  # a command's worker (looked for from its spawn); else a pool worker that said it polls
    since: float

    def current(self) -> bool:
        return self.handle.generation == self.generation and self.handle.state is ProcState.STARTING

    def listed(self, answers: dict[Question, dict[str, Poller]]) -> bool:
        return all(any(self._is_me(name) for name in answers[(self.queue, t)]) for t in self.types)

    def _is_me(self, name: str) -> bool:
        return name == self.identity or (self.pid_prefix is not None and name.startswith(self.pid_prefix))


class Listing:
    """The replicas waiting to be seen polling, and the one task that looks for them (`run`)."""

    def __init__(self, client: Callable[[], Awaitable[Client]], events: ObjectSendStream[Event]) -> None:
        self.client = client
        self.events = events
        self.expected: dict[ProcessHandle, Expected] = {}
        self.failing = ""  # what the last wave's failure said ("" while Temporal answers)
        self._added = anyio.Event()
        self._last_wave = -WAVE_S

    def expect(
        self,
        handle: ProcessHandle,
        queue: str,
        types: list[QueueType],
        identity: str,
        *,
        command: bool = False,
    ) -> None:
        """Look for the handle's current process among `queue`'s pollers of every type in `types`: READY once
        found in all (no type: at once). A pool worker is expected once it says it polls; a `command` from its
        spawn (it says nothing), by its pool identity or temporalio's `<pid>@<host>`."""
        pid_prefix = f"{handle.pid}@" if command and handle.pid is not None else None
        self.expected[handle] = Expected(
            handle, handle.generation, queue, frozenset(types), identity, pid_prefix, command, time.monotonic()
        )
        self._added.set()

    def polling(self, handle: ProcessHandle) -> bool:
        """The handle's current process said it polls and waits only for Temporal to list it (past its start's
        CPU-heavy part: it holds no other start back)."""
        expected = self.expected.get(handle)
        return expected is not None and not expected.command and expected.current()

    async def run(self) -> None:
        """Waves while replicas are expected: the first GATHER_S after an expectation (the rest of its batch of
        starts joins it), then one every WAVE_S at most, every SLOW_WAVE_S once all left have waited SLOW_AFTER_S."""
        while True:
            self._forget_stale()
            if not self.expected:
                await self._added.wait()
            elif not self._added.is_set():
                youngest = time.monotonic() - max(e.since for e in self.expected.values())
                with anyio.move_on_after(WAVE_S if youngest < SLOW_AFTER_S else SLOW_WAVE_S):
                    await self._added.wait()
            gather = GATHER_S if self._added.is_set() else 0.0
            self._added = anyio.Event()
            await anyio.sleep(max(gather, self._last_wave + WAVE_S - time.monotonic()))
            self._forget_stale()
            if self.expected:
                self._last_wave = time.monotonic()
                await self._wave()

    def _forget_stale(self) -> None:
        for handle in [h for h, e in self.expected.items() if not e.current()]:
            del self.expected[handle]

    async def _wave(self) -> None:
        waiting = list(self.expected.values())
        questions = {(e.queue, t) for e in waiting for t in e.types}
        answers: dict[Question, dict[str, Poller]] = {}

        async def ask(queue: str, queue_type: QueueType, client: Client) -> None:
            answers[(queue, queue_type)] = await queue_pollers(client, queue, queue_type)

        try:
            client = await self.client()
            await side_by_side(*(partial(ask, queue, queue_type, client) for queue, queue_type in questions))
        except Exception as exc:  # Temporal away or refusing: the replicas wait (start_timeout bounds them)
            await self._failed(waiting, " ".join(str(exc).split())[:300] or type(exc).__name__)
            return
        if self.failing:
            log.info("supervisor.listing_answers_again")
            self.failing = ""
            await self._tell(waiting, "")
        for expected in waiting:
            if expected.listed(answers) and self.expected.get(expected.handle) is expected:
                del self.expected[expected.handle]
                await self.events.send(SeenReady(expected.handle, expected.generation))

    async def _failed(self, waiting: list[Expected], why: str) -> None:
        if not self.failing:
            log.warning("supervisor.listing_failed", error=why, waiting=len(waiting))
        self.failing = why
        await self._tell(waiting, why)

    async def _tell(self, waiting: list[Expected], why: str) -> None:
        """A pool worker's wait for Temporal, as it would say it itself (`why`; "" once Temporal answers)."""
        for expected in waiting:
            if not expected.command and expected.current():
                await self.events.send(Notified(expected.handle, expected.generation, {WAITING_KEY: why}))

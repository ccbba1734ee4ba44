"""`[pool.notify]`: a person is told when something breaks, by a program of theirs and/or a webhook.

The supervisor's own events (the structlog feed that `top` reads too) are classified into kinds (`classify`, pure);
each kind is rate-limited (`min_interval`: the events within it are counted and the latest is sent when it ends,
with that count); a delivery is retried with backoff and its failure is logged, never raised. Nothing here runs
on the reconcile loop: the loop only logs, the feed copies without blocking, this task does the rest.

The document, one JSON object per delivery (version 1):
    {"version": 1, "kind": "fatal", "pool": "pipelex", "host": "web-1", "at": "2026-12-04T08:00:00+00:00",
     "summary": "llm/1 FATAL: ...", "suppressed": 0, "event": {<the supervisor's event, as in its log>}}
The exec program gets it on stdin (and the kind as $PIPELEX_POOL_NOTIFY_KIND); the webhook as the body of a POST
(Content-Type: application/json)."""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import anyio
import structlog

from pipelex_pool.event_feed import FEED
from pipelex_pool.ticks import sleep_on_grid
from pipelex_pool.topology.schema import PoolNotify

log = structlog.get_logger("pipelex_pool.notify")
VERSION = 1
KIND_ENV = "PIPELEX_POOL_NOTIFY_KIND"
CRASH_LOOP_DEATHS = 3  # young deaths of one replica within CRASH_LOOP_WINDOW_S: a crash loop (before FATAL)
CRASH_LOOP_WINDOW_S = 60.0
BURST_ATTEMPTS = 5  # attempts handed back within BURST_WINDOW_S: a hand-back burst
BURST_WINDOW_S = 60.0
TICK_S = 1.0  # rate-limited notes and Temporal's outage are looked at this often
CONFIG_CHECK_S = 5.0  # without [pool.notify]: whether a reload added it


@dataclass(frozen=True)
class Note:
    kind: str
    summary: str
    event: dict[str, Any]


@dataclass
class Classifier:
    """Supervisor events in, notes out (pure apart from the times it keeps for crash loops and bursts)."""

    deaths: dict[tuple[str, int], deque[float]] = field(default_factory=dict)
    handed_back: deque[float] = field(default_factory=deque)

    def classify(self, event: dict[str, Any], now: float) -> list[Note]:
        name = event.get("event")
        where = f"{event.get('group')}/{event.get('replica')}"
        if name == "worker.fatal":
            return [Note("fatal", f"{where} FATAL: {event.get('reason') or event.get('status')}", event)]
        if name == "worker.exited":
            notes = []
            status = str(event.get("status", ""))
            if status.startswith("SIGKILL (possibly out of memory)"):
                notes.append(Note("oom_kill", f"{where} killed by SIGKILL from outside the pool (OOM killer?)", event))
            if event.get("next") == "backoff":
                times = self.deaths.setdefault((str(event.get("group")), int(event.get("replica", -1))), deque())
                times.append(now)
                while times and times[0] < now - CRASH_LOOP_WINDOW_S:
                    times.popleft()
                if len(times) == CRASH_LOOP_DEATHS:
                    notes.append(
                        Note(
                            "crash_loop",
                            f"{where} died young {len(times)} times within {CRASH_LOOP_WINDOW_S:.0f}s: {status}",
                            event,
                        )  # fmt: skip
                    )
            return notes
        if name == "worker.memory_exceeded":
            return [Note("memory_roll", f"{where} over its max_memory: replaced by a rolling restart", event)]
        if name == "handback.handed_back":
            self.handed_back.append(now)
            while self.handed_back and self.handed_back[0] < now - BURST_WINDOW_S:
                self.handed_back.popleft()
            if len(self.handed_back) == BURST_ATTEMPTS:
                summary = f"{BURST_ATTEMPTS} attempts of dead replicas handed back within {BURST_WINDOW_S:.0f}s"
                return [Note("hand_back_burst", summary, event)]
            return []
        if name == "deploy.ended":
            outcome = str(event.get("outcome", ""))
            kind = "deploy_done" if outcome == "done" else "deploy_failed"
            return [Note(kind, f"deploy of build {event.get('to_build')}: {outcome}", event)]
        return []


@dataclass
class Limiter:
    """Per kind: one delivery per `min_interval`; what comes meanwhile is counted and its latest sent at the end."""

    sent_at: dict[str, float] = field(default_factory=dict)
    held: dict[str, tuple[Note, int]] = field(default_factory=dict)

    def offer(self, note: Note, now: float, min_interval: float) -> tuple[Note, int] | None:
        last = self.sent_at.get(note.kind)
        if last is None or now - last >= min_interval:
            self.sent_at[note.kind] = now
            return note, 0
        _, count = self.held.get(note.kind, (note, 0))
        self.held[note.kind] = (note, count + 1)
        return None

    def due(self, now: float, min_interval: float) -> list[tuple[Note, int]]:
        """The held notes whose kind's interval has passed (each with how many events it stands for, minus one)."""
        out = []
        for kind, (note, count) in list(self.held.items()):
            if now - self.sent_at.get(kind, 0.0) >= min_interval:
                del self.held[kind]
                self.sent_at[kind] = now
                out.append((note, count - 1))
        return out


def document(note: Note, pool: str, suppressed: int) -> dict[str, Any]:
    return {
        "version": VERSION,
        "kind": note.kind,
        "pool": pool,
        "host": socket.gethostname(),
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "summary": note.summary,
        "suppressed": suppressed,
        "event": note.event,
    }


class Notifications:
    """The supervisor's task: follows the event feed and Temporal's health, delivers the notes."""

    def __init__(
        self,
        config: Callable[[], PoolNotify | None],
        pool: str,
        temporal_down_since: Callable[[], float | None],
        routing_mismatches: Callable[[], list[str]] = list,
    ) -> None:
        self.config = config
        self.pool = pool
        self.temporal_down_since = temporal_down_since
        self.routing_mismatches = routing_mismatches
        self.told_mismatches: set[str] = set()  # the ones already told (told again if they clear and come back)
        self.classifier = Classifier()
        self.limiter = Limiter()
        self.told_outage: float | None = None  # the outage (its start) already told
        self.delivered = 0
        self.failed = 0

    async def run(self) -> None:
        # nothing to tell anyone: no copy of each event; a reload may add [pool.notify] (it has no event of its own:
        # looked at with the loop's own pass, not every TICK_S, so an idle pool without notifications is not woken)
        while self.config() is None:  # noqa: ASYNC110
            await sleep_on_grid(CONFIG_CHECK_S)
        receive = FEED.subscribe()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._tick, tg)
                async for event in receive:
                    config = self.config()
                    if config is None or str(event.get("event", "")).startswith("notify."):
                        continue
                    for note in self.classifier.classify(event, time.monotonic()):
                        self._offer(tg, config, note)
        finally:
            FEED.unsubscribe(receive)

    def _offer(self, tg: anyio.abc.TaskGroup, config: PoolNotify, note: Note) -> None:
        if note.kind not in config.events:
            return
        offered = self.limiter.offer(note, time.monotonic(), config.min_interval.total_seconds())
        if offered is not None:
            tg.start_soon(self._deliver, config, *offered)

    async def _tick(self, tg: anyio.abc.TaskGroup) -> None:
        """Held notes whose interval passed, and a Temporal outage that has lasted `temporal_down_after`."""
        while True:
            await sleep_on_grid(TICK_S)  # (periodic by nature: an outage's length has no event of its own)
            config = self.config()
            if config is None:
                continue
            for note, suppressed in self.limiter.due(time.monotonic(), config.min_interval.total_seconds()):
                tg.start_soon(self._deliver, config, note, suppressed)
            since = self.temporal_down_since()
            if since is None:
                self.told_outage = None
            elif self.told_outage != since and time.time() - since >= config.temporal_down_after.total_seconds():
                self.told_outage = since
                down = f"Temporal has not answered for {time.time() - since:.0f}s"
                self._offer(tg, config, Note("temporal_down", down, {"event": "temporal.down", "since": since}))
            mismatches = set(self.routing_mismatches())
            for mismatch in sorted(mismatches - self.told_mismatches):
                self._offer(tg, config, Note("routing_mismatch", mismatch, {"event": "watch.routing_mismatch"}))
            self.told_mismatches = mismatches

    async def _deliver(self, config: PoolNotify, note: Note, suppressed: int) -> None:
        body = json.dumps(document(note, self.pool, suppressed)).encode()
        targets: list[tuple[str, Callable[[], Any]]] = []
        if config.exec:
            targets.append((config.exec[0], lambda: self._exec(config, note.kind, body)))
        if config.webhook:
            url = config.webhook
            targets.append((url, lambda: anyio.to_thread.run_sync(_post, url, body, config.timeout.total_seconds())))
        async with anyio.create_task_group() as tg:
            for target, send in targets:
                tg.start_soon(self._with_retries, config, note.kind, target, send)

    async def _with_retries(self, config: PoolNotify, kind: str, target: str, send: Callable[[], Any]) -> None:
        delay, error = 1.0, ""
        for attempt in range(1, config.retries + 2):
            try:
                with anyio.fail_after(config.timeout.total_seconds() + 1):
                    await send()
            except Exception as exc:  # a receiver's failure is logged, never the pool's
                error = str(exc) or type(exc).__name__
                if attempt <= config.retries:
                    await anyio.sleep(delay)
                    delay *= 2
                continue
            self.delivered += 1
            log.info("notify.sent", kind=kind, to=target, attempts=attempt)
            return
        self.failed += 1
        log.warning("notify.failed", kind=kind, to=target, attempts=config.retries + 1, error=error)

    async def _exec(self, config: PoolNotify, kind: str, body: bytes) -> None:
        assert config.exec is not None
        env = {**os.environ, KIND_ENV: kind}
        with anyio.fail_after(config.timeout.total_seconds()):
            result = await anyio.run_process(config.exec, input=body, env=env, check=False)
        if result.returncode != 0:
            last = result.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
            raise RuntimeError(f"exit {result.returncode} {last[0]}".strip())


def _post(url: str, body: bytes, timeout: float) -> None:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 (the operator's URL, http(s))
        if response.status >= 300:
            raise RuntimeError(f"HTTP {response.status}")

"""A live feed for `pipelex-pool top` (control command `subscribe`): the pool's status when it changes (checked
every second, sent at most once a second and at least every STATUS_EVERY_S) and the supervisor's events as they
are logged. One subscriber costs one status rendering per second while something changes, nothing per event that
nobody reads (a full subscriber's queue drops events rather than holding the supervisor)."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import anyio

from pipelex_pool.control.status import pool_status
from pipelex_pool.event_feed import FEED
from pipelex_pool.supervisor.view import PoolView

CHECK_EVERY_S = 1.0
FASTEST_CHECK_S = 0.1  # a client may ask for checks this often at most
FRESH_EVERY_S = 1.0  # the replicas' reports and resources read for a frame at most this often
STATUS_EVERY_S = 5.0  # uptime and CPU move all the time: refreshed this often even when nothing else changed
VOLATILE = frozenset(
    {"uptime_s", "cpu_percent", "rss_bytes", "cpu_seconds", "seen_for_s", "backlog_age_s", "poller_age_s", "age_s"}
)
Send = Callable[[dict[str, Any]], Awaitable[bool]]


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def digest(status: Mapping[str, object]) -> str:
    return hashlib.sha256(json.dumps(_stable(status), sort_keys=True, default=str).encode()).hexdigest()


async def stream(supervisor: PoolView, send: Send, *, events: bool = True, check_every: float = CHECK_EVERY_S) -> None:
    """Push status frames (and, with `events`, event frames) through `send` until it returns False (the client is
    gone). `check_every`: how often the status is looked at (`--wait` follows progress at 0.25 s; `top` at 1 s)."""
    subscribed = FEED.subscribe() if events else None
    try:
        async with anyio.create_task_group() as tg:

            async def forward_events() -> None:
                assert subscribed is not None
                async for event in subscribed:
                    if not await send({"event": event}):
                        tg.cancel_scope.cancel()
                        return

            if subscribed is not None:
                tg.start_soon(forward_events)
            last, sent_at, fresh_at = "", 0.0, 0.0
            while True:
                if time.monotonic() - fresh_at >= FRESH_EVERY_S:  # (states are live; reports and resources read)
                    await supervisor.fresh()
                    fresh_at = time.monotonic()
                status = pool_status(supervisor)
                now = time.monotonic()
                current = digest(status)
                if current != last or now - sent_at >= STATUS_EVERY_S:
                    if not await send({"status": status}):
                        break
                    last, sent_at = current, now
                await anyio.sleep(check_every)
            tg.cancel_scope.cancel()
    finally:
        if subscribed is not None:
            FEED.unsubscribe(subscribed)

"""The supervisor's own sd_notify to systemd (Type=notify): READY once the pool has settled, STATUS with
counts, WATCHDOG from the reconcile loop, RELOADING/READY around reloads, STOPPING on shutdown."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

from pipelex_pool.notify import Notifier

SYSTEMD_ENV = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES")


def watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Half of WATCHDOG_USEC, if the watchdog is meant for this process (sd_watchdog_enabled rules)."""
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


class SystemdNotifier:
    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        environ = os.environ if environ is None else environ
        self.notifier = Notifier(environ.get("NOTIFY_SOCKET"))
        self.interval = watchdog_interval(environ)
        self.ready_sent = False
        self.status = ""
        self.next_ping = 0.0

    def settled(self, summary: str, settled: bool) -> None:
        """Report the pool's state; READY=1 the first time (and the first time after a reload) it has settled."""
        lines = []
        if summary != self.status:
            lines.append(f"STATUS={summary}")
        if settled and not self.ready_sent:
            lines.append("READY=1")
        # (sends never block: one systemd could not take now is tried again at the next iteration)
        if lines and self.notifier.send(*lines):
            self.status = summary
            self.ready_sent = self.ready_sent or settled

    def reloading(self) -> None:
        self.ready_sent = False
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notifier.send("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading")

    def stopping(self) -> None:
        self.notifier.send("STOPPING=1", "STATUS=draining every replica")

    def ping_due(self, now: float) -> float | None:
        """When the next WATCHDOG=1 is due (None: no watchdog); sends it if it is due now."""
        if self.interval is None or not self.notifier.enabled:
            return None
        if now >= self.next_ping:
            self.notifier.send("WATCHDOG=1")
            self.next_ping = now + self.interval
        return self.next_ping

"""Replica states and decoded exit statuses."""

from __future__ import annotations

import enum
import signal
from dataclasses import dataclass, replace

from pipelex_pool.errors import EX_CONFIG


class ProcState(enum.Enum):
    """supervisord's states, the model to beat: every replica is in exactly one."""

    STOPPED = "STOPPED"  # not running, and not meant to (yet)
    STARTING = "STARTING"  # spawned, not ready yet
    READY = "READY"  # ready (notify READY=1, seen polling, or delay passed)
    BACKOFF = "BACKOFF"  # exited unexpectedly, waiting to be started again
    STOPPING = "STOPPING"  # SIGTERM sent, draining
    EXITED = "EXITED"  # exited and not to be restarted by policy (clean exit, or policy never)
    FATAL = "FATAL"  # gave up: crash loop or configuration error, until restart-failed

    @property
    def alive(self) -> bool:
        return self in (ProcState.STARTING, ProcState.READY, ProcState.STOPPING)


@dataclass(frozen=True)
class ExitStatus:
    """How a process ended: an exit code, or the signal that killed it."""

    code: int | None = None
    signal: int | None = None
    by_pool: str | None = None  # why the pool itself killed it (watchdog, start timeout, drain past its grace)
    last_words: str | None = None  # the last line it wrote when it exited non-zero: what an operator reads first

    @classmethod
    def from_returncode(cls, returncode: int, last_words: str | None = None) -> ExitStatus:
        if returncode < 0:  # killed by a signal: its last line was written before, and explains nothing
            return cls(signal=-returncode)
        status = cls(code=returncode)
        return status if status.success or not last_words else replace(status, last_words=last_words)

    @property
    def success(self) -> bool:
        return self.code == 0

    @property
    def config_error(self) -> bool:
        return self.code == EX_CONFIG

    @property
    def reason(self) -> str:
        """A short, fixed label for metrics: killed_by_pool, sigkill, signal, config_error, exit_nonzero, exit_0."""
        if self.by_pool is not None:
            return "killed_by_pool"
        if self.signal is not None:
            return "sigkill" if self.signal == signal.SIGKILL else "signal"
        if self.code == EX_CONFIG:
            return "config_error"
        return "exit_0" if self.code == 0 else "exit_nonzero"

    @property
    def labels(self) -> tuple[str, str]:
        """(code, signal) as metric label values: ("1", "") for an exit code, ("", "SIGKILL") for a signal."""
        if self.signal is not None:
            try:
                return "", signal.Signals(self.signal).name
            except ValueError:
                return "", str(self.signal)
        return str(self.code), ""

    def describe(self) -> str:
        """e.g. "exit 78 (configuration error): pipelex-pool worker: configuration error: ...", "SIGTERM"."""
        return f"{self._how()}: {self.last_words}" if self.last_words else self._how()

    def _how(self) -> str:
        if self.by_pool is not None:
            return f"killed by the pool: {self.by_pool}"
        if self.signal is not None:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = f"signal {self.signal}"
            return f"{name} (possibly out of memory)" if self.signal == signal.SIGKILL else name
        if self.code == EX_CONFIG:
            return "exit 78 (configuration error)"
        return f"exit {self.code}"

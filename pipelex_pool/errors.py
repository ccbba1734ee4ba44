"""The exception hierarchy of pipelex-pool: every message says what is wrong, where, and how to fix it."""

from __future__ import annotations

import enum
from dataclasses import dataclass

EX_CONFIG = 78  # sysexits.h: configuration error; the supervisor treats it as fatal at once


class Severity(enum.Enum):
    ERROR = "error"
    WARNING = "warning"
    NOTE = "note"


@dataclass(frozen=True)
class Issue:
    """One finding about a topology file: the key path it concerns, what is wrong and how to fix it."""

    path: str
    problem: str
    fix: str = ""
    severity: Severity = Severity.ERROR
    file: str | None = None  # set when the issue is in a referenced file (temporal_config_file)

    def render(self, file: str) -> str:
        file = self.file or file
        where = f"{file}: {self.path}" if self.path else file
        text = f"{where}: {self.severity.value}: {self.problem}"
        return f"{text} Fix: {self.fix}" if self.fix else text

    def as_dict(self) -> dict[str, str]:
        return {
            "file": self.file or "",
            "path": self.path,
            "severity": self.severity.value,
            "problem": self.problem,
            "fix": self.fix,
        }


class PoolError(Exception):
    """Base of every error pipelex-pool raises on purpose."""


class TopologyError(PoolError):
    """A topology file that cannot be used: carries every error found, not just the first."""

    def __init__(self, file: str, issues: list[Issue]) -> None:
        self.file = file
        self.issues = issues
        lines = [issue.render(file) for issue in issues]
        super().__init__("\n".join(lines) if lines else f"{file}: invalid topology")


class WorkerBootError(PoolError):
    """A worker that cannot start because of its configuration (exit status 78)."""


class ProtocolError(PoolError):
    """A malformed control-socket frame or response."""


class PoolNotRunningError(PoolError):
    """No supervisor answers on the control socket."""


class PoolAlreadyRunningError(PoolError):
    """Another supervisor holds the pool's lock."""


class ErrorCode(enum.StrEnum):
    """Why the pool refused a control request: one table for the server, the commands and the CLI."""

    MALFORMED = "malformed"  # not a protocol frame
    FRAME_TOO_LARGE = "frame_too_large"
    TIMEOUT = "timeout"  # no complete request in time
    FORBIDDEN = "forbidden"  # peer uid not allowed
    UNKNOWN_COMMAND = "unknown_command"
    BAD_ARGS = "bad_args"
    UNKNOWN_GROUP = "unknown_group"
    AUTOSCALED = "autoscaled"  # scale of a group the autoscaler drives
    OVER_LIMIT = "over_limit"  # more replicas than [pool] max_replicas
    INVALID_TOPOLOGY = "invalid_topology"
    BUSY = "busy"  # a rolling restart is in progress
    STOPPING = "stopping"  # the pool is shutting down
    SAVE_FAILED = "save_failed"
    INTERNAL_ERROR = "internal_error"

    @property
    def usage(self) -> bool:
        """A mistake in the request itself (CLI exit 2) rather than a failure to carry it out (exit 1)."""
        return self in _USAGE_CODES


_USAGE_CODES = {
    ErrorCode.BAD_ARGS,
    ErrorCode.UNKNOWN_GROUP,
    ErrorCode.INVALID_TOPOLOGY,
    ErrorCode.UNKNOWN_COMMAND,
    ErrorCode.AUTOSCALED,
    ErrorCode.OVER_LIMIT,
}


class RequestRefused(PoolError):
    """A control request the pool will not carry out: a code for scripts, a message (what, how to fix) for people."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

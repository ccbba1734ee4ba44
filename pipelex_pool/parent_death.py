"""Parent-death signal (Linux prctl): a child never outlives the process that started it."""

from __future__ import annotations

import ctypes
import os
import signal
import sys

from pipelex_pool.contract import SUPERVISOR_PID_ENV

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def set_parent_death_signal(signum: int = signal.SIGTERM) -> None:
    """Ask the kernel to send `signum` when our parent dies; a getppid() check should back it up."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0)


def become_child_subreaper() -> bool:
    """Adopt orphaned descendants (Linux): a process double-forked by the fork server becomes our own child, so we
    wait for it and read its exit status like any other. False when the kernel refuses (or not Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)


def expected_parent() -> int:
    """The pid this process must have as its parent: the supervisor's, as it passed it, or else whatever the parent
    is now (a worker run by hand). Comparing with the supervisor's own pid, not with getppid() taken at start, sees
    a supervisor that died before this process armed its parent-death signal (then the parent is already init)."""
    value = os.environ.get(SUPERVISOR_PID_ENV, "")
    return int(value) if value.isdigit() else os.getppid()

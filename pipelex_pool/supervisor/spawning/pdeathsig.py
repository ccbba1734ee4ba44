"""`python -m pipelex_pool.supervisor.spawning.pdeathsig PROGRAM ARGS...`: exec PROGRAM with SIGTERM as its parent-death
signal, so programs that do not watch their parent (the dev server, `pipelex worker`) never outlive the pool.

The token __PID__ in the arguments and in PIPELEX_POOL_IDENTITY is replaced by the pid, which exec keeps.
"""

from __future__ import annotations

import os
import sys

from pipelex_pool.contract import IDENTITY_ENV, PID_TOKEN, with_pid
from pipelex_pool.parent_death import expected_parent, set_parent_death_signal


def main() -> None:
    argv = [arg.replace(PID_TOKEN, str(os.getpid())) for arg in sys.argv[1:]]
    if not argv:
        sys.exit("usage: python -m pipelex_pool.supervisor.spawning.pdeathsig PROGRAM [ARGS...]")
    if PID_TOKEN in os.environ.get(IDENTITY_ENV, ""):
        os.environ[IDENTITY_ENV] = with_pid(os.environ[IDENTITY_ENV], os.getpid())
    set_parent_death_signal()
    if os.getppid() != expected_parent():  # the supervisor died before the signal was armed
        sys.exit(1)
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        sys.exit(f"pipelex-pool: cannot run {argv[0]!r}: {exc}")


if __name__ == "__main__":
    main()

"""`python -m pipelex_pool.supervisor.pdeathsig PROGRAM ARGS...`: exec PROGRAM with SIGTERM as its parent-death
signal, so programs that do not watch their parent (the dev server, `pipelex worker`) never outlive the pool.

The token __PID__ in the arguments and in PIPELEX_POOL_IDENTITY is replaced by the pid, which exec keeps.
"""

from __future__ import annotations

import os
import sys

from pipelex_pool.parent_death import set_parent_death_signal

PID_TOKEN = "__PID__"


def main() -> None:
    argv = [arg.replace(PID_TOKEN, str(os.getpid())) for arg in sys.argv[1:]]
    if not argv:
        sys.exit("usage: python -m pipelex_pool.supervisor.pdeathsig PROGRAM [ARGS...]")
    if PID_TOKEN in os.environ.get("PIPELEX_POOL_IDENTITY", ""):
        os.environ["PIPELEX_POOL_IDENTITY"] = os.environ["PIPELEX_POOL_IDENTITY"].replace(PID_TOKEN, str(os.getpid()))
    set_parent_death_signal()
    if os.getppid() == 1:  # the parent died before the signal was armed
        sys.exit(1)
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        sys.exit(f"pipelex-pool: cannot run {argv[0]!r}: {exc}")


if __name__ == "__main__":
    main()

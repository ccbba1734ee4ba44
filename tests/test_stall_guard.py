"""The last line of supervision: a loop that makes no step for the stall time ends the supervisor with status 70
(systemd restarts it; its workers drain on their parent's death), while a loop that steps, or a process that was
paused as a whole, goes on. Run in a child process: the guard ends the process it guards."""

from __future__ import annotations

import subprocess
import sys

GUARDED = """
import time
from pipelex_pool.supervisor.fault import StallGuard
steps = [0]
with StallGuard(lambda: steps[0], stall_s={stall}, check_s=0.05):
    end = time.monotonic() + {run_s}
    while time.monotonic() < end:
        time.sleep(0.01)
        steps[0] += {advance}
print("still running")
"""


def run(stall: float, run_s: float, advance: int) -> subprocess.CompletedProcess[str]:
    code = GUARDED.format(stall=stall, run_s=run_s, advance=advance)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_a_loop_that_stops_stepping_ends_the_process_with_70() -> None:
    stalled = run(stall=0.5, run_s=20, advance=0)
    assert stalled.returncode == 70, stalled.stderr
    assert "supervisor.loop_stalled" in stalled.stdout + stalled.stderr


def test_a_loop_that_steps_is_left_alone() -> None:
    stepping = run(stall=0.5, run_s=2, advance=1)
    assert stepping.returncode == 0 and "still running" in stepping.stdout, stepping.stderr

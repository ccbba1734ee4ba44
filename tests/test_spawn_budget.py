"""The spawn budget, pure: a token bucket (the rate and the batch) and a bound on the children still in their
start, with a fake clock; the cores it is sized by (fake cgroup files, and one real process under an affinity)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pipelex_pool.supervisor.spawning.budget import IN_START_WINDOW_S, SpawnBudget
from pipelex_pool.supervisor.spawning.cores import usable_cores


def test_the_rate_and_the_batch_cap_starts() -> None:
    budget = SpawnBudget(rate=4, batch=2)
    assert [budget.take(0.0) for _ in range(3)] == [True, True, False]
    assert budget.next_at(0.0) == 0.25  # one token refilled at 4 per second
    assert budget.take(0.25)
    assert not budget.take(0.25)


def test_a_start_is_held_while_the_bound_is_reached_and_goes_once_one_is_through() -> None:
    budget = SpawnBudget(rate=1000, batch=10, in_start=2)
    starting = [0.0, 0.1]  # when each child still in its start was started
    assert not budget.take(0.2, starting)
    assert budget.take(0.2, starting[1:])  # one got through (READY, or waiting for Temporal): the next goes


def test_a_child_starting_for_longer_than_the_window_holds_nothing_back() -> None:
    budget = SpawnBudget(rate=1000, batch=10, in_start=2)
    starting = [0.0, 1.0]
    assert not budget.take(1.5, starting)
    assert budget.next_at(1.5, starting) == IN_START_WINDOW_S  # when the oldest leaves the window
    assert budget.take(IN_START_WINDOW_S, starting)


def test_without_a_bound_only_the_tokens_count() -> None:
    budget = SpawnBudget(rate=1000, batch=3)
    assert all(budget.take(0.0, [0.0] * 50) for _ in range(3))


def cgroup_files(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_the_cores_are_the_cpus_the_supervisor_may_use_within_its_cgroup_quota(tmp_path: Path) -> None:
    """cgroup v2: the tightest cpu.max of the process's cgroup and its parents, rounded up (1.5 cores -> 2)."""
    root = cgroup_files(
        tmp_path,
        {
            "self": "0::/system.slice/pool.service\n",
            "cpu.max": "max 100000\n",
            "system.slice/cpu.max": "150000 100000\n",  # a slice of 1.5 cores
            "system.slice/pool.service/cpu.max": "max 100000\n",
        },
    )
    assert usable_cores({0, 1, 2, 3}, root, root / "self") == 2
    assert usable_cores({0}, root, root / "self") == 1  # fewer CPUs than the quota: the CPUs
    (root / "system.slice/cpu.max").write_text("max 100000\n")
    assert usable_cores({0, 1, 2, 3}, root, root / "self") == 4  # no quota: every CPU it may run on


def test_a_cgroup_v1_quota_counts_and_none_readable_leaves_the_cpus(tmp_path: Path) -> None:
    root = cgroup_files(
        tmp_path,
        {
            "self": "4:memory:/x\n3:cpu,cpuacct:/docker/abc\n0::/\n",
            "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "100000\n",  # `docker run --cpus 1`
            "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
            "cpu,cpuacct/cpu.cfs_quota_us": "-1\n",  # the root: no quota
            "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
        },
    )
    assert usable_cores({0, 1, 2, 3}, root, root / "self") == 1
    assert usable_cores({0, 1}, root, root / "missing") == 2  # no /proc/self/cgroup to read: the CPUs


PRINT_BATCH = "from pipelex_pool.supervisor.spawning.budget import default_spawn_batch; print(default_spawn_batch())"


def test_a_supervisor_confined_to_one_cpu_counts_one_core() -> None:
    """A real process under an affinity of one CPU (as `taskset -c N` leaves it): its budget counts one core."""
    cpu = min(os.sched_getaffinity(0))
    counted = subprocess.run(
        [
            sys.executable,
            "-c",
            "from pipelex_pool.supervisor.spawning.budget import default_spawn_batch as b; print(b())",
        ],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=lambda: os.sched_setaffinity(0, {cpu}),  # noqa: PLW1509 (no thread in this test's process forks)
    )
    assert counted.stdout.strip() == "1"

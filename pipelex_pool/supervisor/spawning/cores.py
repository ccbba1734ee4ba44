"""How many cores the pool's starts may use: the CPUs the supervisor may run on (its affinity: `taskset`, a cpuset,
systemd's AllowedCPUs=) within its cgroup's CPU quota (systemd's CPUQuota=, a container's `--cpus`), not the
machine's count. Its children inherit both, so a budget sized to the machine would start them faster than the
cores they share can take them."""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")


def usable_cores(
    affinity: set[int] | None = None, cgroup_root: Path = CGROUP_ROOT, self_cgroup: Path = SELF_CGROUP
) -> int:
    """The CPUs of `affinity` (this process's, by default), at most its cgroup's CPU quota rounded up; at least 1."""
    cpus = len(affinity if affinity is not None else os.sched_getaffinity(0))
    quota = cgroup_quota(cgroup_root, self_cgroup)
    if quota is not None:
        cpus = min(cpus, math.ceil(quota))
    return max(1, cpus)


def cgroup_quota(cgroup_root: Path = CGROUP_ROOT, self_cgroup: Path = SELF_CGROUP) -> float | None:
    """The tightest CPU quota, in cores, of this process's cgroup and of its ancestors (cgroup v2's cpu.max, v1's
    cpu.cfs_quota_us over cpu.cfs_period_us); None when none is set or none can be read."""
    try:
        lines = self_cgroup.read_text().splitlines()
    except OSError:
        return None
    quotas: list[float] = []
    for line in lines:
        controllers, _, path = line.partition(":")[2].partition(":")  # "ID:CONTROLLERS:PATH"
        if controllers == "":  # cgroup v2: the unified hierarchy
            for directory in _ancestors(cgroup_root, path):
                quotas += _v2_quota(directory / "cpu.max")
        elif "cpu" in controllers.split(","):  # cgroup v1: the cpu controller's own hierarchy
            mount = cgroup_root / controllers
            for directory in _ancestors(mount if mount.is_dir() else cgroup_root / "cpu", path):
                quotas += _v1_quota(directory)
    return min(quotas) if quotas else None


def _ancestors(mount: Path, path: str) -> list[Path]:
    """`mount`/`path` and each of its parents up to `mount`."""
    parts = [part for part in path.split("/") if part]
    return [mount.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def _v2_quota(cpu_max: Path) -> list[float]:
    try:
        quota, period = cpu_max.read_text().split()[:2]
        return [] if quota == "max" else [int(quota) / int(period)]
    except (OSError, ValueError):
        return []


def _v1_quota(directory: Path) -> list[float]:
    try:
        quota = int((directory / "cpu.cfs_quota_us").read_text())
        period = int((directory / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return []
    return [quota / period] if quota > 0 and period > 0 else []

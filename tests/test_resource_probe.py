"""The resource sampler's probes on real processes (no pool, no server): what a replica's RSS, CPU, threads and
kernel state read as, that a stopped or gone process reads as such, and that a probe's descriptor (each keeps its
process's /proc/<pid>/stat open) is released when its process leaves the pool or the sampler stops."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from pipelex_pool.supervisor.process.usage import CPU_WINDOW_S, ResourceProbe
from pipelex_pool.supervisor.watchers.resources import Probes
from tests.test_handle import make_handle

HOLD = "import sys, time; blob = bytearray(64 * 2**20); print('ready', flush=True); time.sleep(120)"


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[str]]]:
    """Two Python children, each holding 64 MiB, stopped by pid at the end whatever happened."""
    made = [subprocess.Popen([sys.executable, "-c", HOLD], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        for child in made:
            assert child.stdout is not None and child.stdout.readline() == "ready\n"
        yield made
    finally:
        for child in made:
            if child.poll() is None:
                os.kill(child.pid, signal.SIGCONT)
                child.kill()
            child.wait()
            if child.stdout is not None:
                child.stdout.close()


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_probe_reads_a_process_and_says_when_it_cannot_run_or_is_gone(
    children: list[subprocess.Popen[str]],
) -> None:
    child = children[0]
    probe = ResourceProbe(child.pid)
    try:
        usage = probe.sample()
        assert usage is not None
        assert usage.rss_bytes > 64 * 2**20 and usage.threads >= 1 and usage.can_run
        assert usage.status in ("sleeping", "running")  # (it may not be back in its sleep yet)
        os.kill(child.pid, signal.SIGSTOP)
        os.waitpid(child.pid, os.WUNTRACED)  # (its parent is told once it is stopped)
        stopped = probe.sample()
        assert stopped is not None and stopped.status == "stopped" and not stopped.can_run
        child.kill()
        child.wait()  # reaped: its pid may name another process from now on
        assert probe.sample() is None
    finally:
        probe.close()


def test_probes_hold_one_descriptor_per_listed_process_and_release_them(
    children: list[subprocess.Popen[str]],
) -> None:
    handles = [make_handle(), make_handle()]
    before = open_descriptors()
    with Probes() as probes:
        readings = probes.sample(zip(handles, (c.pid for c in children), strict=True))
        assert [(h, pid) for h, pid, _ in readings] == list(zip(handles, (c.pid for c in children), strict=True))
        assert all(usage is not None and usage.rss_bytes > 64 * 2**20 for _, _, usage in readings)
        assert probes.open == 2 and open_descriptors() == before + 2
        # the first replica leaves the pool (replaced, or its group scaled down): its probe is closed
        readings = probes.sample([(handles[1], children[1].pid)])
        assert [h for h, _, _ in readings] == [handles[1]] and readings[0][2] is not None
        assert probes.open == 1 and open_descriptors() == before + 1
        # a pid that names no process: no probe, no descriptor
        children[0].kill()
        children[0].wait()
        assert probes.sample([(handles[0], children[0].pid), (handles[1], children[1].pid)])[0][0] is handles[1]
        assert probes.open == 1
    assert open_descriptors() == before  # the sampler stopped: every probe closed


def test_cpu_percent_is_measured_over_a_second_at_least_so_two_looks_in_a_row_agree() -> None:
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        probe = ResourceProbe(busy.pid)
        try:
            with_figure = None
            deadline = time.monotonic() + 60  # (a hang guard: the child gets some CPU within a second or so)
            while with_figure is None or with_figure.cpu_percent <= 0:
                assert time.monotonic() < deadline
                time.sleep(0.2)
                with_figure = probe.sample()
                assert with_figure is not None
            looked_at = time.monotonic()
            again = probe.sample()  # a second look a moment later (status, then /metrics)
            assert again is not None
            if time.monotonic() - looked_at < CPU_WINDOW_S:  # (a machine stalled for a second has a new window)
                assert again.cpu_percent == with_figure.cpu_percent  # not the few clock ticks between the looks
            assert again.cpu_seconds >= with_figure.cpu_seconds
        finally:
            probe.close()
    finally:
        busy.kill()
        busy.wait()

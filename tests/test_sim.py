"""The load model means what it says: a step's `cpu_s` is CPU that step burns, whatever runs beside it."""

from __future__ import annotations

import time

import anyio
from temporalio.testing import ActivityEnvironment

from pipelex_pool.sim.activities import crafting_activities
from pipelex_pool.sim.model import SimStep


async def test_concurrent_cpu_steps_cost_n_times_the_cpu() -> None:
    """Four concurrent steps of 0.2 CPU-seconds each burn 0.8 s of the process's CPU, not 0.2 s shared."""
    act = crafting_activities[0]
    steps = [SimStep(activity=act.__name__, latency_s=0.0, cpu_s=0.2) for _ in range(4)]
    before = time.process_time()

    async def run(step: SimStep) -> None:
        await ActivityEnvironment().run(act, step)

    async with anyio.create_task_group() as tg:
        for step in steps:
            tg.start_soon(run, step)
    burnt = time.process_time() - before
    assert burnt >= 0.75, f"4 concurrent steps of cpu_s=0.2 burnt {burnt:.2f} CPU-seconds, expected about 0.8"

"""Simulated Pipelex activities: they wait, burn CPU, hold memory or fail at the rates a step asks for.

They carry Pipelex's activity names so a topology's routing and scopes are exercised as in production, but
they call no model and produce no content: a documented load model.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Awaitable, Callable

from temporalio import activity
from temporalio.exceptions import ApplicationError

from pipelex_pool.contract import IDENTITY_ENV
from pipelex_pool.sim.model import SimStep, StepResult

CRAFTING_ACTIVITIES = (
    "act_llm_gen_object",
    "act_llm_gen_text",
    "act_llm_gen_object_list",
    "act_img_gen_images",
    "act_jinja2_gen_text",
    "act_extract_gen_extract_pages",
    "act_render_page_views",
)
PIPE_ACTIVITIES = ("act_assemble_graph", "act_deliver", "act_flush_trace_events")


def _worker_identity() -> str:
    """The identity the pool gave this worker process (pipelex_pool.worker sets it), else pid@host."""
    return os.environ.get(IDENTITY_ENV) or f"{os.getpid()}@{os.uname().nodename}"


def _burn_cpu(seconds: float) -> None:
    """Burn `seconds` of this thread's CPU: N concurrent steps cost N times the CPU, as real work would (the
    process's CPU clock would let concurrent steps share one budget and finish early)."""
    deadline = time.thread_time() + seconds
    value = 0
    while time.thread_time() < deadline:
        value = (value * 31 + 7) % 1_000_003


async def _simulate(step: SimStep) -> StepResult:
    info = activity.info()
    started = time.monotonic()
    held = bytearray(step.memory_mb * 2**20) if step.memory_mb > 0 else None
    if held is not None:
        for offset in range(0, len(held), 4096):  # touch every page so it counts in RSS
            held[offset] = 1
    if step.cpu_s > 0:
        await asyncio.to_thread(_burn_cpu, step.cpu_s)
    # A retry resumes from the progress the previous attempt heartbeated, as a resumable real activity would.
    resumed_from = float(info.heartbeat_details[0]) if info.heartbeat_details else 0.0
    done = resumed_from
    while done < step.latency_s:  # wait in slices, heartbeating the progress (and meeting a heartbeat timeout)
        chunk = min(step.latency_s - done, 1.0)
        await asyncio.sleep(chunk)
        done += chunk
        activity.heartbeat(round(done, 3))
    del held
    if step.failure_rate > 0 and random.random() < step.failure_rate:
        raise ApplicationError(
            f"simulated failure of {info.activity_type} (failure_rate={step.failure_rate})",
            type="SimulatedFailure",
        )
    return StepResult(
        activity=info.activity_type,
        task_queue=info.task_queue,
        attempt=info.attempt,
        worker_identity=_worker_identity(),
        duration_s=time.monotonic() - started,
        resumed_from_s=resumed_from,
    )


def _make(name: str) -> Callable[[SimStep], Awaitable[StepResult]]:
    async def run(step: SimStep) -> StepResult:
        return await _simulate(step)

    run.__name__ = name
    run.__qualname__ = name
    return activity.defn(name=name)(run)


crafting_activities = tuple(_make(name) for name in CRAFTING_ACTIVITIES)
pipe_activities = tuple(_make(name) for name in PIPE_ACTIVITIES)

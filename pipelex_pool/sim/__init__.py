"""Simulated Pipelex task packs `crafting` and `pipe`: a load model for a topology, not real LLM calls.

The names are Pipelex's (act_llm_gen_text, WfPipeRun, ...) so scopes and routing behave as in production; the
activities only wait, burn CPU, hold memory or fail at the rates each run's steps ask for.
"""

from __future__ import annotations

from pipelex_pool.packs import TaskPack
from pipelex_pool.sim.activities import crafting_activities, pipe_activities
from pipelex_pool.sim.workflows import WfPipeRouter, WfPipeRun

HEAVY_IMPORTED_MARK = "pipelex_pool.sim.heavy: imported"  # what the heavy load model says on import (sim/heavy.py)

packs: dict[str, TaskPack] = {
    "crafting": TaskPack(activities=crafting_activities),
    "pipe": TaskPack(workflows=(WfPipeRouter, WfPipeRun), activities=pipe_activities),
}

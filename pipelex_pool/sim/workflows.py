"""Simulated Pipelex workflows. WfPipeRun routes each step exactly as Pipelex routes activity calls."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from pipelex_pool import routing
    from pipelex_pool.sim.model import PipeRunInput, PipeRunResult, SimStep, StepResult


@workflow.defn(name="WfPipeRun")
class WfPipeRun:
    """Runs a simulated pipe: each step is one activity call, routed by activity name and handle."""

    @workflow.run
    async def run(self, run_input: PipeRunInput) -> PipeRunResult:
        table = routing.installed()

        async def one(step: SimStep) -> StepResult:
            target = table.resolve(step.activity, step.handle)
            retry = target.retry
            result: StepResult = await workflow.execute_activity(
                step.activity,
                step,
                result_type=StepResult,
                task_queue=target.task_queue,
                start_to_close_timeout=target.start_to_close_timeout,
                schedule_to_close_timeout=target.schedule_to_close_timeout,
                schedule_to_start_timeout=target.schedule_to_start_timeout,
                heartbeat_timeout=target.heartbeat_timeout,
                retry_policy=RetryPolicy(
                    initial_interval=retry.initial_interval,
                    backoff_coefficient=retry.backoff_coefficient,
                    maximum_interval=retry.maximum_interval,
                    maximum_attempts=retry.maximum_attempts,
                    non_retryable_error_types=list(retry.non_retryable_error_types) or None,
                ),
            )
            return result

        if run_input.parallel:
            steps = list(await asyncio.gather(*(one(step) for step in run_input.steps)))
        else:
            steps = [await one(step) for step in run_input.steps]
        return PipeRunResult(run_id=run_input.run_id, steps=steps)


@workflow.defn(name="WfPipeRouter")
class WfPipeRouter:
    """Entry point of a simulated pipe: starts WfPipeRun as a child workflow, as Pipelex's router does."""

    @workflow.run
    async def run(self, run_input: PipeRunInput) -> PipeRunResult:
        result: PipeRunResult = await workflow.execute_child_workflow(
            "WfPipeRun",
            run_input,
            id=f"{workflow.info().workflow_id}/run",
            result_type=PipeRunResult,
            execution_timeout=timedelta(hours=1),
        )
        return result

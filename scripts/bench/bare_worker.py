"""A bare temporalio worker, for comparison: the same queue, activities, workflows and runtime profile (slots, rates)
as the pool's worker for that scope, read from the same topology, and none of the pool's additions (no interceptor,
no in-flight reports, no notify socket, no readiness check, no health file). Stops on SIGTERM.

    .venv/bin/python -m scripts.bench.bare_worker --config T --task-queue llm_q --scope runner-llm --profile llm-pool
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path

from temporalio.worker import Worker

from pipelex_pool.temporal.connect import connect
from pipelex_pool.worker.config import load_worker_settings
from pipelex_pool.worker.run import activity_executor, sandboxed_runner, worker_kwargs


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--task-queue", required=True)
    parser.add_argument("--scope", required=True)
    parser.add_argument("--profile")
    parser.add_argument("--identity", default="bare-worker")
    args = parser.parse_args()
    settings = load_worker_settings(args.config, args.task_queue, args.scope, args.profile, args.identity)
    client = await connect(settings.connection, identity=settings.identity)
    catalog = settings.catalog
    kwargs = {key: value for key, value in worker_kwargs(settings).items() if value is not None}
    worker = Worker(
        client,
        task_queue=settings.task_queue,
        workflows=[catalog.workflows[name] for name in settings.scope.workflows],
        activities=[catalog.activities[name] for name in settings.scope.activities],
        activity_executor=activity_executor(settings),
        workflow_runner=sandboxed_runner(),
        **kwargs,
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with worker:
        print("polling", flush=True)
        await stop.wait()
    sys.stdout.flush()
    os._exit(0)  # (an interpreter's teardown after temporalio's client can abort: pipelex_pool/finalization.py)


if __name__ == "__main__":
    asyncio.run(main())

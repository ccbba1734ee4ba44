"""A plain temporalio app for pipelex-pool: one workflow, one `async def` activity and one plain `def` activity.

pipelex-pool imports `packs` (the topology's `[pool] app = "hello_app:packs"`) from this file's directory: a
TaskPack is just a named set of workflow classes and activity functions, nothing else to subclass or register.
"""

from __future__ import annotations

import time
from datetime import timedelta

from temporalio import activity, workflow

from pipelex_pool.packs import TaskPack


@activity.defn
async def compose_greeting(name: str) -> str:
    """An async activity: runs on the worker's event loop."""
    return f"Hello, {name}!"


@activity.defn
def count_letters(text: str) -> int:
    """A sync activity (blocking code is fine here): runs in the worker's thread pool, one thread per activity
    slot of the runtime profile (`max_concurrent_activities`)."""
    time.sleep(0.01)  # stands for a blocking call (a library without asyncio, a file, a subprocess)
    return sum(char.isalpha() for char in text)


@workflow.defn
class Greet:
    """Greets `name`, then counts the letters of the greeting."""

    @workflow.run
    async def run(self, name: str) -> str:
        greeting = await workflow.execute_activity(compose_greeting, name, start_to_close_timeout=timedelta(seconds=30))
        letters = await workflow.execute_activity(count_letters, greeting, start_to_close_timeout=timedelta(seconds=30))
        return f"{greeting} ({letters} letters)"


packs = {"hello": TaskPack(workflows=(Greet,), activities=(compose_greeting, count_letters))}

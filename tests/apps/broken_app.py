"""A test app whose workflow class lacks @workflow.defn: temporalio's Worker() refuses it."""

from __future__ import annotations

from pipelex_pool.packs import TaskPack


class NotAWorkflow:
    async def run(self) -> None:
        return None


packs = {"broken": TaskPack(workflows=(NotAWorkflow,))}

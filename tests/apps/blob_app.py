"""A test app for the payload codec: an activity that returns a large result, and a workflow that takes a document
(a Pipelex-style input with `job_metadata`) and hands it to an activity."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import activity, workflow

from pipelex_pool.packs import TaskPack

TIMEOUT = timedelta(seconds=60)


@activity.defn
async def make_blob(size: int) -> str:
    return "".join(chr(ord("a") + n % 26) for n in range(size))


@activity.defn
async def measure(document: dict[str, Any]) -> int:
    return len(document["text"])


@workflow.defn
class MakeBlob:
    """Returns the length of a `size`-character result that only the activity ever held whole."""

    @workflow.run
    async def run(self, size: int) -> int:
        blob = await workflow.execute_activity(make_blob, size, start_to_close_timeout=TIMEOUT)
        return len(blob)


@workflow.defn
class Measure:
    @workflow.run
    async def run(self, document: dict[str, Any]) -> int:
        result: int = await workflow.execute_activity(measure, document, start_to_close_timeout=TIMEOUT)
        return result


packs = {"blobs": TaskPack(workflows=(MakeBlob, Measure), activities=(make_blob, measure))}

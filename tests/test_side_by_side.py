"""Questions to Temporal asked side by side (pollers.side_by_side): pure asyncio, no server. The first error is what
the caller sees, as itself (its text reaches status and the logs), and the other questions are cancelled."""

from __future__ import annotations

import anyio
import pytest

from pipelex_pool.temporal.pollers import side_by_side

pytestmark = pytest.mark.anyio


async def test_every_call_runs_together_and_an_error_is_raised_as_itself() -> None:
    done: list[str] = []
    gate = anyio.Event()

    async def first() -> None:
        await gate.wait()  # (only the second call sets it: both run at once)
        done.append("first")

    async def second() -> None:
        gate.set()
        done.append("second")

    await side_by_side(first, second)
    assert sorted(done) == ["first", "second"]

    cancelled = []

    async def refused() -> None:
        raise ConnectionError("127.0.0.1:7233: connection refused")

    async def slow() -> None:
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            cancelled.append(True)
            raise

    with pytest.raises(ConnectionError, match="connection refused"):
        await side_by_side(slow, refused)
    assert cancelled == [True]

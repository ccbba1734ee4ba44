"""The fleet's view, pure: which other pools of the fleet hold a deploy's switch back (no server needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pipelex_pool.temporal.fleet import FleetView
from pipelex_pool.temporal.pollers import Poller, QueueType
from pipelex_pool.temporal.watch import QueueView

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def queue(*pollers: tuple[str, float, str | None]) -> QueueView:
    """llm_q's activity pollers: (identity, seconds since its last poll, version)."""
    return QueueView(
        "llm_q",
        QueueType.ACTIVITY,
        pollers={i: Poller(i, NOW - timedelta(seconds=age), version) for i, age, version in pollers},
    )


FLEET = FleetView("shared", pools={"hosta": {"vm-a"}, "hostb": {"vm-b"}})


def test_a_pool_running_only_the_old_build_holds_the_switch_and_is_named() -> None:
    view = queue(("hosta/llm/0@vm-a:1", 1, "sim.B"), ("hostb/llm/0@vm-b:2", 5, "sim.A"))
    assert FLEET.lagging("hosta", [view], "sim.B", NOW) == ["hostb (vm-b) runs only A on llm_q (activity)"]
    view = queue(("hostb/llm/0@vm-b:2", 5, "sim.A"), ("hostb/llm/0@vm-b:3", 2, "sim.B"))
    assert FLEET.lagging("hosta", [view], "sim.B", NOW) == []


def test_a_pool_whose_old_poller_went_quiet_in_the_describe_still_holds_the_switch() -> None:
    """Its poll on another partition left it out of the last describes: it is still seen on the queue (within the
    poller history) and runs no B, so the switch waits for it."""
    view = queue(("hostb/llm/0@vm-b:2", 100, "sim.A"))
    assert FLEET.lagging("hosta", [view], "sim.B", NOW) == ["hostb (vm-b) runs only A on llm_q (activity)"]
    view = queue(("hostb/llm/0@vm-b:2", 100, "sim.A"), ("hostb/llm/0@vm-b:3", 100, "sim.B"))
    quiet = "hostb (vm-b) has not polled B on llm_q (activity) for 100s"
    assert FLEET.lagging("hosta", [view], "sim.B", NOW) == [quiet]


def test_pools_outside_the_fleet_or_long_gone_from_a_queue_hold_nothing() -> None:
    view = queue(
        ("hostb/llm/0@vm-b:2", 600, "sim.A"),  # hostb left llm_q ten minutes ago
        ("hostc/llm/0@vm-c:4", 1, "sim.A"),  # not in the fleet
        ("hostb/llm/0@elsewhere:5", 1, "sim.A"),  # hostb's name from a host its beacon does not list: a stray
        ("hosta/llm/0@vm-a:1", 1, "sim.A"),  # this pool itself
    )
    assert FLEET.lagging("hosta", [view], "sim.B", NOW) == []

"""`[workers.G] after`: the groups a group waits for before it starts, and the ones that stop before it (pure).

A group starts once every group it names is READY (each of its replicas polling); a group the operator stopped or
scaled to 0 is not waited for (it would never be ready). The order only holds starts: a replica that dies and
comes back is not held, nor is `restart-failed`. On the way down the order is reversed: a group keeps running
while a group that named it still has a live process."""

from __future__ import annotations

from collections.abc import Mapping

from pipelex_pool.supervisor.groups import SupervisedGroup
from pipelex_pool.supervisor.process.state import ProcState


def after(group: SupervisedGroup) -> list[str]:
    return list(group.spec.after) if group.spec is not None else []


def is_ready(group: SupervisedGroup) -> bool:
    """Every replica the group should run is READY (a stopped or removed group, or one of 0, holds nothing)."""
    wanted = 0 if group.stopped_by_operator or group.removed else group.desired
    slots = group.handles[:wanted]
    return len(slots) == wanted and all(handle.state is ProcState.READY for handle in slots)


def waiting_for(group: SupervisedGroup, groups: Mapping[str, SupervisedGroup]) -> list[str]:
    """The groups named in `after` that are not ready yet."""
    return [name for name in after(group) if name in groups and not is_ready(groups[name])]


def held_by(group: SupervisedGroup, groups: Mapping[str, SupervisedGroup]) -> list[str]:
    """The groups that named this one in `after` and still have a live process: on the way down, they go first."""
    return [
        other.name
        for other in groups.values()
        if group.name in after(other) and any(handle.state.alive for handle in other.all_handles())
    ]

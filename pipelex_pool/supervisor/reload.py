"""What a reload changes: a pure diff between the running topology and the new file."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipelex_pool.errors import Issue, TopologyError
from pipelex_pool.topology.load import Topology


@dataclass(frozen=True)
class ReloadPlan:
    added: list[str] = field(default_factory=list)  # start
    removed: list[str] = field(default_factory=list)  # drain and forget
    rolled: list[str] = field(default_factory=list)  # definition changed: rolling restart
    scaled: dict[str, int] = field(default_factory=dict)  # only replicas changed: scale, restart nobody
    unchanged: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "added": self.added,
            "removed": self.removed,
            "rolled": self.rolled,
            "scaled": self.scaled,
            "unchanged": self.unchanged,
            "notes": self.notes,
        }


def plan_reload(old: Topology, new: Topology) -> ReloadPlan:
    """Diff two validated topologies; raises TopologyError for a change a reload cannot apply."""
    if new.pool.name != old.pool.name:
        raise TopologyError(
            str(new.file),
            [
                Issue(
                    "pool.name",
                    f"changed from {old.pool.name!r} to {new.pool.name!r}; a reload cannot rename a pool.",
                    "stop the pool (`pipelex-pool down`) and start it again with `up`.",
                )
            ],
        )
    notes = []
    # Built-in workers read [temporal] and the app when they start: a change there means every group rolls.
    shared_changed = old.temporal != new.temporal or old.pool.app != new.pool.app
    if shared_changed:
        notes.append("[temporal] or pool.app changed: every group rolls")
    if old.dev_server != new.dev_server or old.pool.model_dump(exclude={"restart"}) != new.pool.model_dump(
        exclude={"restart"}
    ):
        notes.append("[pool] paths and [dev_server] changes apply at the next `up`")
    added = [name for name in new.groups if name not in old.groups]
    removed = [name for name in old.groups if name not in new.groups]
    rolled, scaled, unchanged = [], {}, []
    for name in new.groups:
        if name not in old.groups:
            continue
        before, after = old.groups[name], new.groups[name]
        if shared_changed or before.model_copy(update={"replicas": 0}) != after.model_copy(update={"replicas": 0}):
            rolled.append(name)
        elif before.replicas != after.replicas:
            scaled[name] = after.replicas
        else:
            unchanged.append(name)
    return ReloadPlan(added, removed, rolled, scaled, unchanged, notes)

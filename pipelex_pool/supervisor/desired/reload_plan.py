"""What a reload changes: a pure diff between what the pool runs now and the new file.

"What runs now" is the running topology with the pool's current desired state on top: an unsaved `scale` or a
`stop` is part of it, so the plan says exactly what the reload will do (`scale llm 3`, then a reload of a file
that says 2: llm is scaled 3 -> 2)."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipelex_pool.errors import Issue, TopologyError
from pipelex_pool.topology.load import Topology
from pipelex_pool.topology.schema import ResolvedGroup


@dataclass(frozen=True)
class RunningGroup:
    """A group's desired state in the running pool."""

    desired: int
    stopped: bool = False


@dataclass(frozen=True)
class ReloadPlan:
    added: list[str] = field(default_factory=list)  # start
    removed: list[str] = field(default_factory=list)  # drain and forget
    rolled: list[str] = field(default_factory=list)  # definition changed: rolling restart
    scaled: dict[str, int] = field(default_factory=dict)  # replicas after the reload, where they change
    unchanged: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)  # stopped by the operator: stays stopped (`start GROUP`)
    notes: list[str] = field(default_factory=list)
    kept: dict[str, int] = field(default_factory=dict)  # autoscaled groups: the autoscaler's count, kept

    def replicas_after(self, name: str, file_replicas: int) -> int:
        return self.scaled.get(name, self.kept.get(name, file_replicas))

    def stays_stopped(self, name: str) -> bool:
        return name in self.stopped

    def as_dict(self) -> dict[str, object]:
        return {
            "added": self.added,
            "removed": self.removed,
            "rolled": self.rolled,
            "scaled": self.scaled,
            "unchanged": self.unchanged,
            "stopped": self.stopped,
            "notes": self.notes,
        }


def _replicas_after(spec: ResolvedGroup, running: RunningGroup) -> int:
    """An autoscaled group keeps the autoscaler's count (within the new bounds); any other takes the file's."""
    if spec.autoscale is None:
        return spec.replicas
    return min(spec.autoscale.max, max(spec.autoscale.min, running.desired))


def plan_reload(old: Topology, new: Topology, running: dict[str, RunningGroup]) -> ReloadPlan:
    """Diff the running pool against a validated topology; raises TopologyError for a change a reload cannot
    apply."""
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
    # New certificates (or another server) need new connections: every replica is replaced, one at a time. A new
    # API key does not: the supervisor and the built-in workers set it on their live clients (they follow the
    # key's file); a command worker has it in its environment, so command groups roll.
    connection_changed = new.connection.changed_from(old.connection)
    key_changed = connection_changed is None and new.connection.key_fingerprint != old.connection.key_fingerprint
    if connection_changed:
        notes.append(f"the Temporal connection changed ({connection_changed}): every group rolls")
        shared_changed = True
    elif key_changed:
        notes.append("new API key: applied in place to the supervisor and the built-in workers (no restart)")
    applied_now = {"restart", "tls", "api_key_file", "temporal_profile"}  # the connection: see above
    if old.dev_server != new.dev_server or old.pool.model_dump(exclude=applied_now) != new.pool.model_dump(
        exclude=applied_now
    ):
        notes.append("[pool] paths and [dev_server] changes apply at the next `up`")
    added = [name for name in new.groups if name not in running]
    removed = [name for name in running if name not in new.groups]
    rolled, scaled, unchanged, stopped, kept = [], {}, [], [], {}
    for name, after in new.groups.items():
        if name not in running:
            continue
        now = running[name]
        replicas = _replicas_after(after, now)
        if now.stopped:
            stopped.append(name)
        before = old.groups.get(name)
        if (
            before is None
            or shared_changed
            or (key_changed and after.command is not None)
            or before.model_copy(update={"replicas": 0}) != after.model_copy(update={"replicas": 0})
        ):
            rolled.append(name)
        elif replicas == now.desired:
            unchanged.append(name)
        if replicas != now.desired:
            scaled[name] = replicas
            notes.append(f"{name}: {now.desired} -> {replicas} replica(s)")
        elif after.autoscale is not None:
            kept[name] = replicas
    return ReloadPlan(added, removed, rolled, scaled, unchanged, stopped, notes, kept)

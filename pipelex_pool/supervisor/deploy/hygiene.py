"""Version hygiene: which of a Worker Deployment's versions to delete from Temporal (pure), and the warning before
Temporal's limit of versions per deployment.

Every deploy leaves a version behind; Temporal refuses a new one past matching.maxVersionsInDeployment (100 by
default). A version is *retired* once nothing can reach it: drained (no new run goes to it, no pinned run is left,
as Temporal reports) or never activated (a deploy that failed or was rolled back before it became current). A
retired version that no process of this pool runs is deleted once it has been retired for `max_age`, and at once
beyond the newest `keep` retired versions. Temporal refuses to delete a version that any poller polled within its
poller history (matching.PollerHistoryTTL, 5 min by default), which covers the fleet's other pools: the refusal is
retried later, never forced."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from pipelex_pool.topology.schema import VersionRetention

WARN_AT = 0.8  # of the limit


class VersionStatus(enum.Enum):
    """Temporal's WorkerDeploymentVersionStatus, without its prefix."""

    UNSPECIFIED = "unspecified"
    INACTIVE = "inactive"  # never current or ramping
    CURRENT = "current"
    RAMPING = "ramping"
    DRAINING = "draining"  # not current any more; pinned runs may remain
    DRAINED = "drained"  # not current, no pinned run left


@dataclass(frozen=True)
class VersionSummary:
    build_id: str
    status: VersionStatus
    created: datetime | None
    retired_since: datetime | None  # drained: when Temporal found it drained; never activated: when it was created


@dataclass(frozen=True)
class Deletion:
    build_id: str
    because: str  # for the log and status: "retired 2h ago (max_age 1d)" or "beyond the newest 10 retired"


def retired(version: VersionSummary) -> bool:
    return version.status in (VersionStatus.DRAINED, VersionStatus.INACTIVE)


def to_delete(
    versions: list[VersionSummary],
    *,
    current: str | None,
    ramping: str | None,
    running_here: set[str],
    retention: VersionRetention,
    now: datetime,
) -> list[Deletion]:
    """The retired versions to delete now, oldest first. Never the current or ramping version, never one this
    pool runs a process of (parked and draining ones included)."""
    if not retention.delete:
        return []
    candidates = sorted(
        (v for v in versions if retired(v) and v.build_id not in (current, ramping) and v.build_id not in running_here),
        key=lambda v: (v.retired_since or v.created or now, v.build_id),
        reverse=True,
    )  # newest first
    found = []
    for rank, version in enumerate(candidates):
        since = version.retired_since or version.created
        age = now - since if since else None
        if rank >= retention.keep:
            found.append(Deletion(version.build_id, f"beyond the newest {retention.keep} retired version(s)"))
        elif age is not None and age >= retention.max_age:
            found.append(
                Deletion(
                    version.build_id,
                    f"retired {_span(age.total_seconds())} ago (max_age {_span(retention.max_age.total_seconds())})",
                )
            )
    return found[::-1]


def near_limit(deployment: str, count: int, retention: VersionRetention) -> str | None:
    """The warning before Temporal refuses a new version: what, and the fix."""
    if count < WARN_AT * retention.limit:
        return None
    fix = (
        "lower [pool.versions] keep or max_age"
        if retention.delete
        else "set [pool.versions] delete = true, or delete versions with `temporal worker deployment delete-version`"
    )
    return (
        f"Worker Deployment {deployment!r} has {count} versions; Temporal refuses a new one (the next deploy) at "
        f"{retention.limit} (matching.maxVersionsInDeployment; [pool.versions] limit): {fix}"
    )


def _span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"

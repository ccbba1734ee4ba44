"""Version hygiene (`[pool.versions]`): the versions a deploy leaves behind are deleted from Temporal once retired
and past retention, never one that can still get a run or that a process still polls; a warning comes before
Temporal's limit of versions per deployment."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from pipelex_pool.supervisor.deploy.hygiene import VersionStatus, VersionSummary, near_limit, to_delete
from pipelex_pool.temporal.devserver import dev_server_command, wait_until_serving
from pipelex_pool.topology.schema import VersionRetention
from tests.conftest import TemporalServer, free_port, stop_process
from tests.pool import Pool
from tests.test_deploy import deployment, temporal_describe

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def version(build: str, status: VersionStatus, retired_minutes_ago: float | None = None) -> VersionSummary:
    since = NOW - timedelta(minutes=retired_minutes_ago) if retired_minutes_ago is not None else None
    return VersionSummary(build, status, created=NOW - timedelta(days=2), retired_since=since)


def deleted(versions: list[VersionSummary], running: set[str] = frozenset(), **retention: Any) -> list[str]:  # type: ignore[assignment]
    chosen = to_delete(
        versions, current="E", ramping=None, running_here=set(running), retention=VersionRetention(**retention),
        now=NOW,
    )  # fmt: skip
    return [d.build_id for d in chosen]


def test_a_retired_version_is_deleted_once_past_max_age_and_never_one_that_can_get_a_run() -> None:
    versions = [
        version("A", VersionStatus.DRAINED, retired_minutes_ago=120),
        version("B", VersionStatus.DRAINED, retired_minutes_ago=5),  # younger than max_age: kept
        version("C", VersionStatus.DRAINING),  # pinned runs left
        version("D", VersionStatus.INACTIVE, retired_minutes_ago=90),  # a failed deploy's version
        version("E", VersionStatus.CURRENT),
        version("F", VersionStatus.RAMPING),
    ]
    assert deleted(versions, max_age=timedelta(hours=1)) == ["A", "D"]  # oldest first
    assert deleted(versions, max_age=timedelta(hours=1), running={"A"}) == ["D"]  # a process still runs A
    assert deleted(versions, max_age=timedelta(hours=1), delete=False) == []


def test_retired_versions_beyond_keep_go_at_once_oldest_first() -> None:
    versions = [version(b, VersionStatus.DRAINED, retired_minutes_ago=m) for b, m in (("A", 30), ("B", 20), ("C", 10))]
    assert deleted(versions, keep=1) == ["A", "B"]
    assert deleted(versions, keep=3) == []
    assert deleted(versions, keep=0) == ["A", "B", "C"]


def test_the_warning_comes_before_temporals_limit_and_says_the_fix() -> None:
    assert near_limit("sim", 79, VersionRetention()) is None
    warning = near_limit("sim", 80, VersionRetention())
    assert warning and "'sim' has 80 versions" in warning and "at 100" in warning and "keep or max_age" in warning
    warning = near_limit("sim", 95, VersionRetention(delete=False))
    assert warning and "temporal worker deployment delete-version" in warning


def builds(described: dict[str, Any]) -> list[str]:
    """The build IDs `temporal worker deployment describe` lists."""
    return sorted(v["BuildID"] for v in described.get("versionSummaries", []))


@pytest.fixture
def forgetful_server(tmp_path: Path) -> Iterator[TemporalServer]:
    """A dev server that forgets a poller 6 s after its last poll (PollerHistoryTTL; 5 min by default) and ends
    long polls after 2 s (so a live poller re-polls well within that): Temporal refuses to delete a version while
    it lists a poller of it, and this test should not wait 5 minutes for it to forget the old build's."""
    port = free_port()
    command = dev_server_command(
        port, tmp_path / "temporal.db", namespaces=("hygiene",), log_level="error",
        dynamic_config={"matching.PollerHistoryTTL": '"6s"', "matching.longPollExpirationInterval": '"2s"'},
    )  # fmt: skip
    log = (tmp_path / "server.log").open("wb")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        address = f"127.0.0.1:{port}"
        anyio.run(lambda: wait_until_serving(address, "hygiene", within=60))
        yield TemporalServer(address=address, pid=proc.pid)
    finally:
        stop_process(proc)
        log.close()


@pytest.mark.slow
def test_a_drained_version_is_deleted_from_temporal_after_a_short_retention(
    forgetful_server: TemporalServer, pool: Pool
) -> None:
    pool.write(
        forgetful_server,
        "hygiene",
        {"pool.deployment": "sim", "pool.build_id": "A", "workers.media.replicas": 0,
         "pool.versions.max_age": "3s", "pool.versions.limit": 2},
    )  # fmt: skip
    pool.up()
    pool.wait_all_ready()
    pool.wait(lambda s: deployment(s)["current"] == "A", 60, "build A made current on the first start")
    result = pool.cli("deploy", "--build-id", "B", "--wait", timeout=300)
    assert result.returncode == 0, result.stderr + result.stdout
    assert builds(temporal_describe(forgetful_server, "hygiene", "sim")) == ["A", "B"]
    near = "Worker Deployment 'sim' has 2 versions; Temporal refuses a new one (the next deploy) at 2"
    pool.wait(lambda s: any(near in w for w in s["warnings"]), 30, "the warning before the limit")

    status = pool.wait(
        lambda s: [d["build_id"] for d in deployment(s)["versions_deleted"]] == ["A"],
        120,
        "build A deleted (drained, its processes gone, Temporal no longer lists a poller of it)",
    )
    assert "retired" in deployment(status)["versions_deleted"][0]["because"]
    described = temporal_describe(forgetful_server, "hygiene", "sim")
    assert builds(described) == ["B"]
    assert described["routingConfig"]["currentVersionBuildID"] == "B"
    assert '"deploy.version_deleted"' in pool.output()
    pool.wait(lambda s: not any(near in w for w in s["warnings"]), 30, "the warning gone with the version")
    assert "deleted lately: A" in pool.cli("status").stdout

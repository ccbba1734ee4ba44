"""The shipped Grafana dashboard and Prometheus alert rules (configs/monitoring/): the rules pass promtool's checks
and unit tests, the dashboard is what its source generates, and every metric either queries is one a real pool
exposes."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import TemporalServer, free_port
from tests.pool import Pool, cli_args

REPO = Path(__file__).resolve().parent.parent
MONITORING = REPO / "configs" / "monitoring"
DASHBOARD = MONITORING / "pipelex-pool-dashboard.json"
ALERTS = MONITORING / "pipelex-pool-alerts.yml"
METRIC = re.compile(r"\bpipelex_pool_[a-z_]+")
SDK_METRIC = re.compile(r"\btemporal_[a-z_]+")


def promtool() -> str:
    found = shutil.which("promtool") or "/usr/bin/promtool"
    assert Path(found).exists(), "promtool (Debian's prometheus package) is installed by .ci/run"
    return found


def test_alert_rules_pass_promtool_check_and_unit_tests() -> None:
    checked = subprocess.run([promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 10 rules found" in checked.stdout
    # each alert fires on its failing series and stays silent on a healthy pool (pipelex-pool-alerts.test.yml)
    tested = subprocess.run(
        [promtool(), "test", "rules", "pipelex-pool-alerts.test.yml"], cwd=MONITORING, capture_output=True, text=True
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    tests = yaml.safe_load((MONITORING / "pipelex-pool-alerts.test.yml").read_text())["tests"]
    fired = {t["alertname"] for case in tests for t in case["alert_rule_test"] if t["exp_alerts"]}
    rules = {r["alert"] for r in yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]}
    assert fired == rules  # none without a firing case
    assert all(
        "Runbook:" in r["annotations"]["description"] for r in yaml.safe_load(ALERTS.read_text())["groups"][0]["rules"]
    )


def test_the_dashboard_is_what_its_source_generates() -> None:
    generated = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "monitoring" / "dashboard.py")], capture_output=True, text=True
    )
    assert generated.returncode == 0, generated.stderr
    assert generated.stdout == DASHBOARD.read_text(), "regenerate it: see scripts/monitoring/dashboard.py"
    dashboard = json.loads(DASHBOARD.read_text())
    assert [v["name"] for v in dashboard["templating"]["list"]] == ["datasource", "pool", "instance"]


def exposed_names(text: str) -> set[str]:
    """The sample names a scrape can carry (a family without samples still counts: a pool without TLS has no
    certificate to report, yet exposes the family)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "info": ["_info"]}
        names.update(family.name + suffix for suffix in suffixes.get(family.type, [""]))
        names.update(sample.name for sample in family.samples)
    return names


def test_every_metric_the_dashboard_and_alerts_query_is_in_a_real_scrape(
    pool: Pool, temporal_server: TemporalServer, namespace: str, tmp_path: Path
) -> None:
    metrics = f"127.0.0.1:{free_port()}"
    first = free_port()
    pool.write(temporal_server, namespace, {
        "pool.metrics": metrics,
        "pool.worker_metrics": f"127.0.0.1:{first}-{first + 9}",  # the SDK's own metrics, which a panel uses
        "workers.media.replicas": 0,
    })  # fmt: skip
    pool.up()
    pool.wait_all_ready()
    mix = tmp_path / "mix.toml"
    mix.write_text('parallel = false\n[[steps]]\nactivity = "act_llm_gen_text"\nlatency_s = 0.2\n')
    ran = subprocess.run(
        cli_args("loadtest", str(pool.topology), "--runs", "4", "--mix", str(mix), "--json"),
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    status = pool.wait(lambda s: s["pool"]["tasks"]["activities_completed"] >= 4, 30, "the activities counted")
    text = urllib.request.urlopen(f"http://{metrics}/metrics", timeout=10).read().decode()
    exposed = exposed_names(text)
    queried = set(METRIC.findall(DASHBOARD.read_text())) | set(METRIC.findall(ALERTS.read_text()))
    assert queried - exposed == set()
    # the panels on the Temporal SDK's metrics query names one of the replicas' SDK endpoints has
    sdk = next(r["sdk_metrics"] for r in status["replicas"] if r["group"] == "llm" and r["sdk_metrics"])
    sdk_names = exposed_names(urllib.request.urlopen(sdk, timeout=10).read().decode())
    assert set(SDK_METRIC.findall(DASHBOARD.read_text())) - sdk_names == set()
    # the latency histogram is real: llm's 4 activities of ~0.2 s, counted in the 0.5 s bucket, not the 0.1 s one
    families = {f.name: f for f in text_string_to_metric_families(text)}
    samples = {(s.name, s.labels.get("le")): s.value for s in families["pipelex_pool_activity_duration_seconds"].samples
               if s.labels.get("group") == "llm"}  # fmt: skip
    assert samples[("pipelex_pool_activity_duration_seconds_count", None)] >= 4
    assert samples[("pipelex_pool_activity_duration_seconds_bucket", "0.1")] == 0
    assert samples[("pipelex_pool_activity_duration_seconds_bucket", "0.5")] >= 4
    assert (
        samples[("pipelex_pool_activity_duration_seconds_bucket", "+Inf")]
        == samples[("pipelex_pool_activity_duration_seconds_count", None)]
    )
    # `status` on an 80-column terminal: the replica table drops columns by priority and every line fits; piped,
    # every column is there
    pool_status = pool.cli("status").stdout
    assert "PROFILE" in pool_status and "TASKS OK/FAIL" in pool_status
    on_terminal = subprocess.run(
        ["script", "-qec", " ".join(cli_args("status", "-c", str(pool.topology))), "/dev/null"],
        capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "80"},
    )  # fmt: skip
    screen = on_terminal.stdout.replace("\r", "").splitlines()
    assert screen and all(len(line) <= 80 for line in screen), "\n".join(line for line in screen if len(line) > 80)
    header = next(line for line in screen if line.startswith("GROUP"))
    assert header.split()[:4] == ["GROUP", "#", "PID", "STATE"] and "POLLING" in header and "PROFILE" not in header
    # Prometheus' `name[]` filter, as prometheus-client's own server reads it
    only = urllib.request.urlopen(f"http://{metrics}/metrics?name[]=pipelex_pool_replicas", timeout=10).read().decode()
    assert {f.name for f in text_string_to_metric_families(only)} == {"pipelex_pool_replicas"}

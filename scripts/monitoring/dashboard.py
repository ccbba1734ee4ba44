"""The Grafana dashboard of pipelex-pool, built with Grafana's own SDK (grafana-foundation-sdk): a reviewable
Python source instead of hand-written JSON. Writes configs/monitoring/pipelex-pool-dashboard.json:

    .venv/bin/python scripts/monitoring/dashboard.py > configs/monitoring/pipelex-pool-dashboard.json

The test suite regenerates it and fails when the committed file differs, and checks that every metric a panel
queries is in a real scrape of a pool (tests/test_monitoring.py)."""

from __future__ import annotations

import json
import sys

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, timeseries
from grafana_foundation_sdk.builders.common import StackingConfig
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import StackingMode
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableHide, VariableRefresh

DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
SELECT = 'instance=~"$instance"'  # every query: the pools picked in the `pool` variable


def query(expr: str, legend: str) -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr.replace("SELECT", SELECT)).legend_format(legend)


def graph(
    title: str, unit: str, *queries: prometheus.Dataquery, stacked: bool = False, width: int = 8
) -> timeseries.Panel:
    panel = timeseries.Panel().title(title).unit(unit).min(0).datasource(DATASOURCE).span(width).height(8)
    if stacked:
        panel = panel.stacking(StackingConfig().mode(StackingMode.NORMAL)).fill_opacity(30)
    for q in queries:
        panel = panel.with_target(q)
    return panel


def single(title: str, unit: str, q: prometheus.Dataquery, width: int = 6) -> stat.Panel:
    return stat.Panel().title(title).unit(unit).datasource(DATASOURCE).span(width).height(4).with_target(q)


def build() -> dash.Dashboard:
    pool_variable = (
        dash.QueryVariable("pool")
        .label("pool")
        .datasource(DATASOURCE)
        .query("label_values(pipelex_pool_build_info, pool)")
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(True)
        .include_all(True)
    )
    instance_variable = (  # the scrape targets of the pools picked: every query filters on them
        dash.QueryVariable("instance")
        .datasource(DATASOURCE)
        .query('label_values(pipelex_pool_build_info{pool=~"$pool"}, instance)')
        .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
        .multi(True)
        .include_all(True)
        .hide(VariableHide.HIDE_VARIABLE)
    )
    rate = "$__rate_interval"
    return (
        dash.Dashboard("pipelex-pool")
        .uid("pipelex-pool")
        .description("Temporal worker pools supervised by pipelex-pool: replicas, queues, work, failures.")
        .tags(["pipelex-pool", "temporal"])
        .refresh("30s")
        .time("now-3h", "now")
        .with_variable(dash.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
        .with_variable(pool_variable)
        .with_variable(instance_variable)
        .with_row(dash.Row("Pool"))
        .with_panel(
            single("Temporal reachable", "bool_yes_no", query("min(pipelex_pool_temporal_reachable{SELECT})", ""))
        )
        .with_panel(single("Replicas READY", "none", query('sum(pipelex_pool_replicas{SELECT, state="READY"})', "")))
        .with_panel(single("Replicas FATAL", "none", query('sum(pipelex_pool_replicas{SELECT, state="FATAL"})', "")))
        .with_panel(
            single(
                "Certificate expires in",
                "s",
                query("min(pipelex_pool_tls_cert_expiry_timestamp_seconds{SELECT}) - time()", ""),
            )
        )
        .with_panel(
            graph(
                "Replicas by state",
                "none",
                query("sum by (group, state) (pipelex_pool_replicas{SELECT}) > 0", "{{group}} {{state}}"),
                stacked=True,
            )
        )
        .with_panel(
            graph(
                "Desired and autoscaled replicas",
                "none",
                query("sum by (group) (pipelex_pool_replicas_desired{SELECT})", "{{group}} desired"),
                query("sum by (group) (pipelex_pool_autoscale_desired{SELECT})", "{{group}} autoscaler"),
            )
        )
        .with_panel(
            graph(
                "Temporal outages",
                "none",
                query(
                    f"sum by (instance) (increase(pipelex_pool_temporal_outages_total{{SELECT}}[{rate}]))",
                    "{{instance}}",
                ),
            )
        )
        .with_row(dash.Row("Work"))
        .with_panel(
            graph(
                "Activities finished per second",
                "ops",
                query(
                    f"sum by (group, outcome) (rate(pipelex_pool_activities_total{{SELECT}}[{rate}]))",
                    "{{group}} {{outcome}}",
                ),
                stacked=True,
            )
        )
        .with_panel(
            graph(
                "Activity error ratio",
                "percentunit",
                query(
                    f'sum by (group) (rate(pipelex_pool_activities_total{{SELECT, outcome="failed"}}[{rate}])) '
                    f"/ sum by (group) (rate(pipelex_pool_activities_total{{SELECT}}[{rate}]))",
                    "{{group}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Activity duration p50 / p95",
                "s",
                *(
                    query(
                        f"histogram_quantile({q}, sum by (group, le) "
                        f"(rate(pipelex_pool_activity_duration_seconds_bucket{{SELECT}}[{rate}])))",
                        f"{{{{group}}}} p{int(q * 100)}",
                    )
                    for q in (0.5, 0.95)
                ),
            )
        )
        .with_panel(
            graph(
                "Workflow tasks per second",
                "ops",
                query(
                    f"sum by (group, outcome) (rate(pipelex_pool_workflow_tasks_total{{SELECT}}[{rate}]))",
                    "{{group}} {{outcome}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Attempts in flight",
                "none",
                query("sum by (group) (pipelex_pool_replica_inflight_attempts{SELECT})", "{{group}}"),
                stacked=True,
            )
        )
        .with_row(dash.Row("Queues"))
        .with_panel(
            graph(
                "Backlog",
                "none",
                query("sum by (queue, type) (pipelex_pool_queue_backlog{SELECT})", "{{queue}} {{type}}"),
            )
        )
        .with_panel(
            graph(
                "Backlog age",
                "s",
                query("max by (queue, type) (pipelex_pool_queue_backlog_age_seconds{SELECT})", "{{queue}} {{type}}"),
            )
        )
        .with_panel(
            graph(
                "Pollers by owner",
                "none",
                query(
                    "sum by (queue, type, owner) (pipelex_pool_queue_pollers{SELECT})", "{{queue}} {{type}} {{owner}}"
                ),
            )
        )
        .with_row(dash.Row("Failures"))
        .with_panel(
            graph(
                "Restarts",
                "none",
                query(f"sum by (group) (increase(pipelex_pool_restarts_total{{SELECT}}[{rate}]))", "{{group}}"),
            )
        )
        .with_panel(
            graph(
                "Exits by code and signal",
                "none",
                query(
                    f"sum by (group, code, signal) (increase(pipelex_pool_exits_total{{SELECT}}[{rate}]))",
                    "{{group}} code {{code}} {{signal}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Hand-backs",
                "none",
                query(
                    f"sum by (group, reason) (increase(pipelex_pool_handed_back_total{{SELECT}}[{rate}]))",
                    "{{group}} attempts ({{reason}})",
                ),
                query(
                    f"sum by (group) (increase(pipelex_pool_workflow_runs_handed_back_total{{SELECT}}[{rate}]))",
                    "{{group}} workflow runs",
                ),
                query(
                    f"sum by (group) (increase(pipelex_pool_hand_back_refused_total{{SELECT}}[{rate}]))",
                    "{{group}} refused",
                ),
            )
        )
        .with_row(dash.Row("Builds and slots"))
        .with_panel(
            graph(
                "Live processes by build",
                "none",
                query("sum by (group, build_id) (pipelex_pool_replicas_by_build{SELECT})", "{{group}} {{build_id}}"),
                stacked=True,
            )
        )
        .with_panel(
            graph(
                "Deploy phase",
                "none",
                query(
                    "max by (from_build, to_build, phase) (pipelex_pool_deploy_phase{SELECT})",
                    "{{from_build}} -> {{to_build}}: {{phase}}",
                ),
            )
        )
        .with_panel(
            graph(
                "Task slots used / available (the SDK's metrics: scrape [pool] worker_metrics)",
                "none",
                query("sum by (worker_type) (temporal_worker_task_slots_used)", "{{worker_type}} used"),
                query("sum by (worker_type) (temporal_worker_task_slots_available)", "{{worker_type}} available"),
            )
        )
        .with_row(dash.Row("Replicas"))
        .with_panel(
            graph(
                "CPU per replica",
                "percentunit",
                query(f"rate(pipelex_pool_replica_cpu_seconds_total{{SELECT}}[{rate}])", "{{group}}/{{replica}}"),
            )
        )
        .with_panel(
            graph(
                "Memory per replica (RSS)",
                "bytes",
                query("pipelex_pool_replica_resident_memory_bytes{SELECT}", "{{group}}/{{replica}}"),
            )
        )
        .with_panel(
            graph(
                "Supervisor faults",
                "none",
                query(f"sum by (task) (increase(pipelex_pool_internal_faults_total{{SELECT}}[{rate}]))", "{{task}}"),
            )
        )
    )


def main() -> None:
    json.dump(build().build(), sys.stdout, cls=JSONEncoder, indent=2, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()

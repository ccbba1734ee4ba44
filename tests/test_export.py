"""`export k8s` and `export systemd`: the topology as manifests and units that their own tools accept, and a
worker command line that, run by hand, does what a pool replica does."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import anyio
import kubernetes_validate
import pytest
import yaml

from pipelex_pool.temporal.pollers import QueueType, queue_pollers
from pipelex_pool.topology.load import load_topology
from tests.conftest import Processes, TemporalServer
from tests.helpers import systemd_analyze
from tests.pool import PIPELEX_POOL, cli_args
from tests.topologies import server_changes, write_topology

REPO = Path(__file__).resolve().parent.parent
PRODUCTION = REPO / "configs" / "production.toml"
# every metadata key of KEDA's Temporal scaler (kedacore/keda pkg/scalers/temporal_scaler.go, triggerMetadata)
KEDA_TEMPORAL_KEYS = {
    "endpoint", "endpointFromEnv", "namespace", "activationTargetQueueSize", "targetQueueSize", "taskQueue",
    "queueTypes", "buildId", "workerDeploymentName", "workerDeploymentBuildId", "selectAllActive",
    "selectUnversioned", "minConnectTimeout", "unsafeSsl", "tlsServerName",
}  # fmt: skip
SECRET = {"name": "pipelex-prod-temporal", "key": "api-key"}


def export(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        cli_args("export", *args), capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})}
    )


def test_k8s_export_passes_the_kubernetes_schemas_and_keda_s_keys() -> None:
    secret_value = "sk-not-to-be-copied-1234"
    result = export("k8s", str(PRODUCTION), "--image", "registry.example/pipelex:1.2", "--namespace", "workers",
                    env={"TEMPORAL_API_KEY": secret_value})  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert secret_value not in result.stdout  # the key is referenced from a Secret, never inlined
    docs = list(yaml.safe_load_all(result.stdout))
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
        assert doc["metadata"]["namespace"] == "workers"
    version = kubernetes_validate.latest_version()
    for doc in by_kind["ConfigMap"] + by_kind["Deployment"]:
        kubernetes_validate.validate(doc, version, strict=True)  # raises on any schema error or unknown field
    topology = load_topology(PRODUCTION)
    deployments = {d["metadata"]["name"].removeprefix("pipelex-prod-"): d for d in by_kind["Deployment"]}
    assert set(deployments) == set(topology.groups)
    for name, group in topology.groups.items():
        spec = deployments[name]["spec"]
        pod = spec["template"]["spec"]
        container = pod["containers"][0]
        assert container["command"] == [
            "pipelex-pool", "worker", "--config", "/etc/pipelex-pool/topology.toml", "--task-queue", group.task_queue,
            "--scope", group.scope, "--profile", group.profile,
        ]  # fmt: skip
        assert pod["terminationGracePeriodSeconds"] > group.graceful_shutdown_timeout.total_seconds()
        if group.max_memory:
            assert container["resources"]["limits"]["memory"] == {2**30: "1Gi", 2 * 2**30: "2Gi"}[group.max_memory]
        else:
            assert "resources" not in container
        env = {e["name"]: e for e in container["env"]}
        assert env["TEMPORAL_API_KEY"]["valueFrom"]["secretKeyRef"] == {
            "name": "pipelex-prod-temporal",
            "key": "api-key",
        }
        assert {k: env[k]["value"] for k in group.env} == group.env
        assert container["readinessProbe"]["exec"]["command"][1:] == ["probe", "--ready"]
        assert spec["replicas"] == (group.autoscale.min if group.autoscale else group.replicas)
    config = by_kind["ConfigMap"][0]["data"]
    assert 'temporal_config_file = "pipelex.toml"' in config["topology.toml"] and "[temporal" in config["pipelex.toml"]
    # autoscaled groups only, with exactly KEDA's Temporal trigger keys
    scaled = {s["spec"]["scaleTargetRef"]["name"]: s for s in by_kind["ScaledObject"]}
    assert set(scaled) == {f"pipelex-prod-{n}" for n, g in topology.groups.items() if g.autoscale is not None}
    openai = scaled["pipelex-prod-openai"]["spec"]
    trigger = openai["triggers"][0]
    assert trigger["type"] == "temporal" and set(trigger["metadata"]) <= KEDA_TEMPORAL_KEYS
    assert trigger["metadata"] == {
        "endpoint": topology.temporal.selected_server().target_host,  # type: ignore[union-attr]
        "namespace": topology.temporal.selected_server().namespace,  # type: ignore[union-attr]
        "taskQueue": "openai_q",
        "queueTypes": "activity",
        "targetQueueSize": "20",
        "activationTargetQueueSize": "0",
    }
    assert (openai["minReplicaCount"], openai["maxReplicaCount"], openai["cooldownPeriod"]) == (2, 8, 120)
    auth = by_kind["TriggerAuthentication"][0]
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    assert auth["spec"]["secretTargetRef"] == [
        {"parameter": "apiKey", "name": "pipelex-prod-temporal", "key": "api-key"}
    ]
    assert "kubectl create secret generic pipelex-prod-temporal" in result.stderr


def test_k8s_export_of_a_versioned_pool_scales_on_its_build_s_backlog(tmp_path: Path) -> None:
    changes = {"pool.deployment": "sim", "pool.build_id": "4f2a9c1", "workers.llm.autoscale": {
        "min": 1, "max": 4, "target_backlog_per_replica": 10}}  # fmt: skip
    result = export("k8s", str(write_topology(tmp_path, changes)))
    assert result.returncode == 0, result.stderr
    scaled = [d for d in yaml.safe_load_all(result.stdout) if d["kind"] == "ScaledObject"]
    assert [s["metadata"]["name"] for s in scaled] == ["testpool-llm"]  # the groups without autoscale have none
    metadata = scaled[0]["spec"]["triggers"][0]["metadata"]
    assert set(metadata) <= KEDA_TEMPORAL_KEYS
    assert (metadata["workerDeploymentName"], metadata["workerDeploymentBuildId"]) == ("sim", "4f2a9c1")


def test_k8s_export_writes_one_file_per_object_and_refuses_a_broken_topology(tmp_path: Path) -> None:
    out = tmp_path / "manifests"
    result = export("k8s", str(PRODUCTION), "-o", str(out))
    assert result.returncode == 0, result.stderr
    files = sorted(p.name for p in out.iterdir())
    assert files[0] == "00-configmap-pipelex-prod-config.yaml" and "02-deployment-pipelex-prod-router.yaml" in files
    broken = write_topology(tmp_path, {"workers.llm.profile": "no-such-profile"}, name="broken.toml")
    refused = export("k8s", str(broken))
    assert refused.returncode == 2 and "workers.llm.profile" in refused.stderr and not refused.stdout


def test_systemd_export_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = systemd_analyze()
    out = tmp_path / "units"
    result = export("systemd", str(PRODUCTION), "-o", str(out), "--bin", PIPELEX_POOL)
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(["pipelex-prod.target", *(f"pipelex-prod-{g}@.service" for g in
                                                     ("router", "openai", "anthropic", "imggen"))])  # fmt: skip
    openai = (out / "pipelex-prod-openai@.service").read_text()
    for line in ("Type=notify", "WatchdogSec=15s", "MemoryMax=1073741824", "TimeoutStopSec=305s", "Restart=always",
                 "RestartPreventExitStatus=78", "EnvironmentFile=/etc/pipelex-pool/pipelex-prod.env",
                 "Environment=PIPELEX_POOL_REPLICA=%i", "--task-queue openai_q --scope runner-llm"):  # fmt: skip
        assert line in openai, line
    target = (out / "pipelex-prod.target").read_text()
    assert "pipelex-prod-openai@0.service pipelex-prod-openai@1.service" in target  # autoscale min: 2
    for template in out.glob("*@.service"):  # verify an instance of each template, as systemd would load it
        shutil.copy(template, out / template.name.replace("@.service", "@0.service"))
    instances = sorted(str(p) for p in out.glob("*@0.service"))
    verify = subprocess.run([analyze, "verify", *instances], capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stderr


@pytest.mark.slow
def test_the_exported_worker_command_polls_its_queue_with_its_scope(
    tmp_path: Path, temporal_server: TemporalServer, namespace: str, processes: Processes
) -> None:
    """The llm Deployment's container, run by hand against the dev server: Temporal lists it polling llm_q for
    activities only (scope runner-llm), its probe says ready, then draining after SIGTERM."""
    topology = write_topology(tmp_path, server_changes(temporal_server.address, namespace))
    result = export("k8s", str(topology))
    assert result.returncode == 0, result.stderr
    llm = next(d for d in yaml.safe_load_all(result.stdout) if d["metadata"]["name"] == "testpool-llm")
    container = llm["spec"]["template"]["spec"]["containers"][0]
    health = tmp_path / "health"
    where = {"/etc/pipelex-pool/topology.toml": str(topology), "/run/pipelex-pool/health": str(health)}
    argv = [where.get(word, word) for word in container["command"]]
    argv[0] = PIPELEX_POOL
    env = {e["name"]: where.get(e["value"], e["value"]) for e in container["env"] if "value" in e}
    env["POD_NAME"] = "testpool-llm-7d9f-abcde"
    worker = processes.spawn(argv, env=env, name="exported-worker")

    def probe(*flags: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cli_args("probe", "--file", str(health), *flags), capture_output=True, text=True)

    deadline = time.monotonic() + 60
    while probe("--ready").returncode != 0:
        assert worker.poll() is None, processes.output(worker)
        assert time.monotonic() < deadline, processes.output(worker)
        time.sleep(0.5)

    async def pollers() -> tuple[set[str], set[str]]:
        from temporalio.client import Client

        client = await Client.connect(temporal_server.address, namespace=namespace)
        activity = await queue_pollers(client, "llm_q", QueueType.ACTIVITY)
        workflow = await queue_pollers(client, "llm_q", QueueType.WORKFLOW)
        return set(activity), set(workflow)

    activity, workflow = anyio.run(pollers)
    mine = [identity for identity in activity if identity.endswith(f":{worker.pid}")]
    assert mine and mine[0].startswith("testpool/llm/"), activity
    assert not any(identity.endswith(f":{worker.pid}") for identity in workflow)  # runner-llm runs no workflow
    starting = next(json.loads(line) for line in processes.output(worker).splitlines() if "worker.starting" in line)
    assert starting["scope"] == "runner-llm" and starting["workflows"] == []
    assert sorted(starting["activities"]) == ["act_llm_gen_object", "act_llm_gen_object_list", "act_llm_gen_text"]
    assert probe("--alive").returncode == 0
    os.kill(worker.pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while worker.poll() is None and probe("--ready").returncode == 0:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert worker.wait(timeout=30) == 0
    assert "draining" in health.read_text()


def test_exports_carry_the_connection_s_certificates_and_key_file(tmp_path: Path) -> None:
    """A pool with mTLS and an API key file: the pods mount the certificates and the key from Secrets (the
    ConfigMap's topology points at the mounts, TEMPORAL_TLS_* too); the systemd units load the certificates as
    credentials. Nothing secret is in either."""
    from tests.tls_proxy import Authority

    authority = Authority(tmp_path / "pki")
    client = authority.issue("pool")
    (tmp_path / "api-key").write_text("sk-secret-do-not-copy\n")
    file = write_topology(tmp_path, {
        "pool.name": "secure",
        "temporal.temporal_config.temporal_server_configs.local.target_host": "temporal.example:7233",
        "pool.api_key_file": "api-key",
        "pool.tls.server_ca_cert": str(authority.ca),
        "pool.tls.server_name": "temporal.example",
        "pool.tls.client_cert": str(client.cert),
        "pool.tls.client_key": str(client.key),
    })  # fmt: skip
    result = export("k8s", str(file), "--image", "registry.example/pipelex:1.2")
    assert result.returncode == 0, result.stderr
    assert "sk-secret-do-not-copy" not in result.stdout and "PRIVATE KEY" not in result.stdout
    docs = list(yaml.safe_load_all(result.stdout))
    version = kubernetes_validate.latest_version()
    for doc in docs:
        if doc["kind"] in ("ConfigMap", "Deployment"):
            kubernetes_validate.validate(doc, version, strict=True)
    topology_in_pods = next(d for d in docs if d["kind"] == "ConfigMap")["data"]["topology.toml"]
    assert 'client_cert = "/etc/pipelex-pool/tls/tls.crt"' in topology_in_pods
    assert 'api_key_file = "/etc/pipelex-pool/secrets/api-key"' in topology_in_pods
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["TEMPORAL_TLS_CLIENT_KEY_PATH"] == "/etc/pipelex-pool/tls/tls.key"
    assert env["TEMPORAL_TLS_SERVER_NAME"] == "temporal.example"
    secrets = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    assert secrets == {"secure-temporal-tls", "secure-temporal"}
    assert "kubectl create secret generic secure-temporal-tls" in result.stderr

    analyze = systemd_analyze()
    out = tmp_path / "units"
    result = export("systemd", str(file), "-o", str(out), "--bin", PIPELEX_POOL)
    assert result.returncode == 0, result.stderr
    unit = (out / "secure-llm@.service").read_text()
    assert f"LoadCredential=temporal-client.key:{client.key}" in unit
    assert "Environment=TEMPORAL_TLS_CLIENT_KEY_PATH=%d/temporal-client.key" in unit
    assert "sk-secret-do-not-copy" not in unit
    shutil.copy(out / "secure-llm@.service", out / "secure-llm@0.service")
    verify = subprocess.run([analyze, "verify", str(out / "secure-llm@0.service")], capture_output=True, text=True)
    assert verify.returncode == 0, verify.stderr

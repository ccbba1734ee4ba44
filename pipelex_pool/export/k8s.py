"""`pipelex-pool export k8s`: the topology as Kubernetes manifests.

One Deployment per group (the pool's worker command line and environment; a rolling update that, like the
pool's, starts the new pod before the old one drains; a grace period above the profile's graceful shutdown;
memory from max_memory; probes that read the worker's health file, which says what the pool's readiness says),
a ConfigMap with the topology (and the pipelex.toml it references), and for each autoscaled group a KEDA
ScaledObject with the Temporal scaler, the pool's rule (ceil(backlog / target_backlog_per_replica)) being the
HPA's AverageValue rule. The API key is referenced from a Secret the operator creates, never copied."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import tomlkit

from pipelex_pool import __version__
from pipelex_pool.contract import HEALTH_FILE_ENV, SDK_METRICS_ENV
from pipelex_pool.export.worker import api_key_env, dns_name, worker_run
from pipelex_pool.temporal.connection import KeyKind
from pipelex_pool.temporal.devserver import is_local
from pipelex_pool.temporal.pollers import QueueType
from pipelex_pool.topology.load import Topology
from pipelex_pool.topology.schema import ResolvedGroup

CONFIG_DIR = "/etc/pipelex-pool"
HEALTH_DIR = "/run/pipelex-pool"
HEALTH_FILE = f"{HEALTH_DIR}/health"
SDK_METRICS_PORT = 9000
API_KEY_SECRET_KEY = "api-key"
TLS_DIR = f"{CONFIG_DIR}/tls"  # the `<pool>-temporal-tls` Secret: ca.crt, tls.crt, tls.key
SECRETS_DIR = f"{CONFIG_DIR}/secrets"  # the `<pool>-temporal` Secret as files (an API key that rotates in place)
TLS_FILES = {"server_ca_cert": "ca.crt", "client_cert": "tls.crt", "client_key": "tls.key"}
# startup: checked every STARTUP_PERIOD_S until the group's start_timeout; then readiness and liveness
STARTUP_PERIOD_S, PROBE_PERIOD_S, LIVENESS_FAILURES = 2, 10, 3
DEFAULT_LIVENESS_AGE_S = 30


def _quantity(size: int) -> str:
    """Bytes as a Kubernetes quantity: 1Gi, 512Mi, or plain bytes."""
    for suffix, unit in (("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10)):
        if size % unit == 0:
            return f"{size // unit}{suffix}"
    return str(size)


def _meta(name: str, namespace: str | None, labels: dict[str, str]) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": labels}
    if namespace:
        meta["namespace"] = namespace
    return meta


def _labels(pool: str, group: str | None = None) -> dict[str, str]:
    labels = {
        "app.kubernetes.io/name": "pipelex-pool",
        "app.kubernetes.io/instance": dns_name(pool),
        "app.kubernetes.io/managed-by": f"pipelex-pool-export-{__version__}",
    }
    if group is not None:
        labels["app.kubernetes.io/component"] = dns_name(group)
    return labels


def config_map(topology: Topology, namespace: str | None) -> dict[str, Any]:
    """The topology file as the pods read it (and the pipelex.toml it references, next to it)."""
    text = topology.file.read_text()
    data = {"topology.toml": text}
    doc = tomlkit.parse(text)
    reference = doc.get("pool", {}).get("temporal_config_file")
    if isinstance(reference, str):
        referenced = (topology.file.parent / reference).resolve()
        data["pipelex.toml"] = referenced.read_text()
        doc["pool"]["temporal_config_file"] = "pipelex.toml"
        data["topology.toml"] = tomlkit.dumps(doc)
    pool_table = doc.get("pool")
    if isinstance(pool_table, dict) and (pool_table.get("api_key_file") or pool_table.get("tls")):
        # the files this machine's paths name are where the pods mount them
        if pool_table.get("api_key_file"):
            pool_table["api_key_file"] = f"{SECRETS_DIR}/{API_KEY_SECRET_KEY}"
        tls = pool_table.get("tls")
        if isinstance(tls, dict):
            for key, name in TLS_FILES.items():
                if tls.get(key):
                    tls[key] = f"{TLS_DIR}/{name}"
        data["topology.toml"] = tomlkit.dumps(doc)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(dns_name(topology.pool.name, "config"), namespace, _labels(topology.pool.name)),
        "data": data,
    }


def _probe(*args: str, period: int, failures: int) -> dict[str, Any]:
    return {
        "exec": {"command": ["pipelex-pool", "probe", *args]},
        "periodSeconds": period,
        "failureThreshold": failures,
        "timeoutSeconds": 5,
    }


def env_file_secret(pool: str, group: str) -> str:
    """The Secret holding a group's env_file variables (made from the files: `kubectl create secret generic NAME
    --from-env-file=FILE`), never copied into the manifest."""
    return dns_name(pool, group, "env")


def deployment(topology: Topology, group: ResolvedGroup, image: str, namespace: str | None) -> dict[str, Any]:
    pool = topology.pool.name
    name = dns_name(pool, group.name)
    run = worker_run(
        topology,
        group,
        program="pipelex-pool",
        config=f"{CONFIG_DIR}/topology.toml",
        python="python",
        replica="0",
        identity=f"{pool}/{group.name}/0@$(POD_NAME)",
    )
    env: list[dict[str, Any]] = [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
    env += [{"name": key, "value": value} for key, value in run.env.items()]
    env.append({"name": HEALTH_FILE_ENV, "value": HEALTH_FILE})
    key_env = api_key_env(topology)
    if key_env is not None:
        secret = {"name": dns_name(pool, "temporal"), "key": API_KEY_SECRET_KEY}
        env.append({"name": key_env, "valueFrom": {"secretKeyRef": secret}})
    env += tls_env(topology)
    container: dict[str, Any] = {
        "name": "worker",
        "image": image,
        "command": run.argv,
        "env": env,
        **({"envFrom": [{"secretRef": {"name": env_file_secret(pool, group.name)}}]} if run.env_files else {}),
        "volumeMounts": [
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
            {"name": "health", "mountPath": HEALTH_DIR},
            {"name": "tmp", "mountPath": "/tmp"},
            *secret_mounts(topology),
        ],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if topology.pool.worker_metrics is not None:
        env.append({"name": SDK_METRICS_ENV, "value": f"0.0.0.0:{SDK_METRICS_PORT}"})
        container["ports"] = [{"name": "sdk-metrics", "containerPort": SDK_METRICS_PORT}]
    if group.max_memory:
        memory = _quantity(group.max_memory)
        container["resources"] = {"requests": {"memory": memory}, "limits": {"memory": memory}}
    if group.command is None or group.readiness == "notify":
        start_s = max(1, math.ceil(group.start_timeout.total_seconds() / STARTUP_PERIOD_S))
        alive_s = int(run.watchdog.total_seconds()) if run.watchdog else DEFAULT_LIVENESS_AGE_S
        max_age = f"{max(alive_s, DEFAULT_LIVENESS_AGE_S)}s"
        container["startupProbe"] = _probe("--ready", period=STARTUP_PERIOD_S, failures=start_s)
        container["readinessProbe"] = _probe("--ready", period=PROBE_PERIOD_S, failures=1)
        container["livenessProbe"] = _probe("--alive", "--max-age", max_age, period=PROBE_PERIOD_S,
                                            failures=LIVENESS_FAILURES)  # fmt: skip
    replicas = group.autoscale.min if group.autoscale else group.replicas
    labels = _labels(pool, group.name)
    selector = {key: labels[key] for key in ("app.kubernetes.io/instance", "app.kubernetes.io/component")}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(name, namespace, labels),
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": selector},
            # as the pool's rolling restart: the new pod READY before the old one drains
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "terminationGracePeriodSeconds": math.ceil(run.stop_timeout.total_seconds()),
                    "securityContext": {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container],
                    "volumes": [
                        {"name": "config", "configMap": {"name": dns_name(pool, "config")}},
                        {"name": "health", "emptyDir": {"medium": "Memory"}},
                        {"name": "tmp", "emptyDir": {}},
                        *secret_volumes(topology),
                    ],
                },
            },
        },
    }


def tls_env(topology: Topology) -> list[dict[str, Any]]:
    """TEMPORAL_TLS_* for the mounted certificates: what envconfig (the built-in worker, or a command worker that
    uses it) reads first, so every container connects as the pool does."""
    tls = topology.connection.tls
    if tls is None:
        return []
    env = [{"name": "TEMPORAL_TLS", "value": "true"}]
    if tls.server_name:
        env.append({"name": "TEMPORAL_TLS_SERVER_NAME", "value": tls.server_name})
    for key, variable in (
        ("server_ca_cert", "TEMPORAL_TLS_SERVER_CA_CERT_PATH"),
        ("client_cert", "TEMPORAL_TLS_CLIENT_CERT_PATH"),
        ("client_key", "TEMPORAL_TLS_CLIENT_KEY_PATH"),
    ):
        if getattr(tls, key) is not None:
            env.append({"name": variable, "value": f"{TLS_DIR}/{TLS_FILES[key]}"})
    return env


def _tls_files(topology: Topology) -> bool:
    tls = topology.connection.tls
    return tls is not None and bool(tls.materials())


def _key_file(topology: Topology) -> bool:
    key = topology.connection.api_key
    return key is not None and key.kind is KeyKind.FILE


def secret_mounts(topology: Topology) -> list[dict[str, Any]]:
    mounts = [{"name": "temporal-tls", "mountPath": TLS_DIR, "readOnly": True}] if _tls_files(topology) else []
    if _key_file(topology):  # a directory mount (not subPath): Kubernetes updates it in place when rotated
        mounts.append({"name": "temporal-secrets", "mountPath": SECRETS_DIR, "readOnly": True})
    return mounts


def secret_volumes(topology: Topology) -> list[dict[str, Any]]:
    pool = topology.pool.name
    volumes = []
    if _tls_files(topology):
        volumes.append({"name": "temporal-tls", "secret": {"secretName": dns_name(pool, "temporal-tls"),
                                                           "defaultMode": 0o440}})  # fmt: skip
    if _key_file(topology):
        volumes.append({"name": "temporal-secrets", "secret": {"secretName": dns_name(pool, "temporal"),
                                                               "defaultMode": 0o440}})  # fmt: skip
    return volumes


def _queue_types(topology: Topology, group: ResolvedGroup) -> str:
    scope = topology.scopes[group.scope]
    types = [QueueType.WORKFLOW] if scope.workflows else []
    types += [QueueType.ACTIVITY] if scope.activities else []
    return ",".join(t.name.lower() for t in types)


def trigger_authentication(topology: Topology, namespace: str | None) -> dict[str, Any]:
    """KEDA's way to the API key: the same Secret the workers read, never a copy of the key."""
    secret = [{"parameter": "apiKey", "name": dns_name(topology.pool.name, "temporal"), "key": API_KEY_SECRET_KEY}]
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "TriggerAuthentication",
        "metadata": _meta(dns_name(topology.pool.name, "temporal"), namespace, _labels(topology.pool.name)),
        "spec": {"secretTargetRef": secret},
    }


def scaled_object(topology: Topology, group: ResolvedGroup, namespace: str | None) -> dict[str, Any]:
    """KEDA's ScaledObject for an autoscaled group: the Temporal scaler on the group's queue."""
    assert group.autoscale is not None
    pool = topology.pool.name
    metadata = {
        "endpoint": topology.connection.address,
        "namespace": topology.connection.namespace,
        "taskQueue": group.task_queue,
        "queueTypes": _queue_types(topology, group),
        "targetQueueSize": str(group.autoscale.target_backlog_per_replica),
        "activationTargetQueueSize": "0",
    }
    tls = topology.connection.tls
    if tls is not None and tls.server_name:
        metadata["tlsServerName"] = tls.server_name
    deployment = topology.pool.deployment
    if deployment is not None and topology.pool.build_id:  # the backlog of this build's version only
        metadata["workerDeploymentName"] = deployment
        metadata["workerDeploymentBuildId"] = topology.pool.build_id
    trigger: dict[str, Any] = {"type": "temporal", "metadata": metadata}
    if api_key_env(topology) is not None:
        trigger["authenticationRef"] = {"name": dns_name(pool, "temporal")}
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": _meta(dns_name(pool, group.name), namespace, _labels(pool, group.name)),
        "spec": {
            "scaleTargetRef": {"name": dns_name(pool, group.name)},
            "minReplicaCount": group.autoscale.min,
            "maxReplicaCount": group.autoscale.max,
            "cooldownPeriod": math.ceil(group.autoscale.cooldown.total_seconds()),
            "triggers": [trigger],
        },
    }


def k8s_manifests(topology: Topology, image: str, namespace: str | None = None) -> list[dict[str, Any]]:
    manifests = [config_map(topology, namespace)]
    autoscaled = [group for group in topology.groups.values() if group.autoscale is not None]
    if autoscaled and api_key_env(topology) is not None:
        manifests.append(trigger_authentication(topology, namespace))
    for group in topology.groups.values():
        manifests.append(deployment(topology, group, image, namespace))
        if group.autoscale is not None:
            manifests.append(scaled_object(topology, group, namespace))
    return manifests


def k8s_warnings(topology: Topology) -> list[str]:
    """What would not work once deployed, though the manifests are valid."""
    address = topology.connection.address
    found = []
    if is_local(address):
        found.append(
            f"the pool connects to {address}: pods cannot reach a server on this machine's loopback; "
            "select a server the cluster reaches ([temporal.temporal_config] selected_server)"
        )
    tls = topology.connection.tls
    if tls is not None and tls.materials():
        files = " ".join(
            f"--from-file={TLS_FILES[m.role]}={m.path if m.path else '<the ' + m.role + ' PEM>'}"
            for m in tls.materials()
        )
        found.append(f"create the certificates' Secret first: kubectl create secret generic "
                     f"{dns_name(topology.pool.name, 'temporal-tls')} {files}")  # fmt: skip
    if _key_file(topology):
        secret = dns_name(topology.pool.name, "temporal")
        found.append(
            f"create the API key's Secret first: kubectl create secret generic {secret} "
            f"--from-file={API_KEY_SECRET_KEY}=<the key file>; rotate it with kubectl apply: the mounted file "
            "changes in place and every worker takes the new key without a restart"
        )
    if any(group.command is not None and group.readiness != "notify" for group in topology.groups.values()):
        found.append("groups with a command and no notify readiness get no probes (their program keeps no health file)")
    for group in topology.groups.values():
        if group.env_file:
            files = " ".join(f"--from-env-file={path}" for path in group.env_file)
            found.append(
                f"create group {group.name}'s env_file Secret first (its values are not copied into the manifests): "
                f"kubectl create secret generic {env_file_secret(topology.pool.name, group.name)} {files}"
            )
    if api_key_env(topology) is not None:
        secret = dns_name(topology.pool.name, "temporal")
        found.append(
            f"create the API key's Secret first: kubectl create secret generic {secret} "
            f"--from-literal={API_KEY_SECRET_KEY}=..."
        )
    return found


def _dumper() -> type[Any]:
    """PyYAML's safe dumper, with multi-line strings (the files in the ConfigMap) as literal blocks."""
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True  # a label set written twice stays two plain copies (no &id001 anchors)

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        style = "|" if "\n" in value and not any(line != line.rstrip() for line in value.splitlines()) else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    return Dumper


def write_manifests(manifests: list[dict[str, Any]], directory: Path | None) -> str:
    """YAML documents: returned as one stream, or written one file per object into `directory`."""
    import yaml

    dumper = _dumper()
    if directory is None:
        return yaml.dump_all(manifests, Dumper=dumper, sort_keys=False)
    directory.mkdir(parents=True, exist_ok=True)
    for index, manifest in enumerate(manifests):
        name = f"{index:02d}-{manifest['kind'].lower()}-{manifest['metadata']['name']}.yaml"
        (directory / name).write_text(yaml.dump(manifest, Dumper=dumper, sort_keys=False))
    return ""

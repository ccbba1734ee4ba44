"""`pipelex-pool export systemd`: one template unit per group and a target that starts every replica, for a
host that runs its workers under systemd alone (no supervisor): the same worker command line, readiness
(Type=notify: READY=1 once Temporal lists the worker polling), watchdog, drain time, memory limit and restart
policy as the pool's. What systemd cannot do, it does not pretend to: no autoscaling, no hand-back of a dead
worker's activities, restarts counted per start (systemd has no min_uptime)."""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path

from pipelex_pool.export.worker import api_key_env, dns_name, worker_run
from pipelex_pool.temporal.connection import KeyKind
from pipelex_pool.topology.load import Topology
from pipelex_pool.topology.schema import ResolvedGroup

RESTART = {"always": "always", "on-failure": "on-failure", "never": "no"}
HARDENING = """\
NoNewPrivileges=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectSystem=strict
ProtectHome=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictSUIDSGID=yes
RestrictRealtime=yes
RestrictNamespaces=yes
LockPersonality=yes
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallErrorNumber=EPERM
CapabilityBoundingSet=
AmbientCapabilities=
RemoveIPC=yes
UMask=0077
"""


def _seconds(value: timedelta) -> str:
    return f"{max(1, math.ceil(value.total_seconds()))}s"


def _quote(word: str) -> str:
    """A word of ExecStart= or Environment=, as systemd reads it: specifiers (%) and variables ($) literal."""
    escaped = word.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return f'"{escaped}"' if any(c in escaped for c in " \t\"\\'") or not escaped else escaped


CREDENTIALS = {
    "server_ca_cert": "temporal-ca.pem",
    "client_cert": "temporal-client.pem",
    "client_key": "temporal-client.key",
}


def credentials(topology: Topology) -> str:
    """The certificates as systemd credentials (read by root at start, given to the unit in $CREDENTIALS_DIRECTORY,
    never readable by its user on disk), named to the worker by TEMPORAL_TLS_*_PATH (envconfig reads them first).
    A credential is copied at start: a renewed certificate needs `systemctl restart` of the units."""
    tls = topology.connection.tls
    if tls is None:
        return ""
    lines = ["# TLS (from the topology's connection): the certificates as credentials, the worker pointed at them"]
    env = ["TEMPORAL_TLS=true"] + ([f"TEMPORAL_TLS_SERVER_NAME={tls.server_name}"] if tls.server_name else [])
    for material in tls.materials():
        name = CREDENTIALS[material.role]
        variable = {"server_ca_cert": "SERVER_CA_CERT", "client_cert": "CLIENT_CERT", "client_key": "CLIENT_KEY"}
        if material.path is None:
            lines.append(f"# {material.role} is inline PEM ({material.where}): write it to a file for LoadCredential=")
            continue
        lines.append(f"LoadCredential={name}:{material.path}")
        env.append(f"TEMPORAL_TLS_{variable[material.role]}_PATH=%d/{name}")
    # %d: systemd's credentials directory (a specifier, so written as it is, unquoted)
    lines += [f"Environment={item if '=%d/' in item else _quote(item)}" for item in env]
    key = topology.connection.api_key
    if key is not None and key.kind is KeyKind.FILE:
        lines.append(f"# The API key is read from {key.where} (the topology's api_key_file), which User= must be able "
                     "to read; it is followed in place (no restart to rotate it)")  # fmt: skip
    return "\n".join(lines) + "\n"


def group_unit(topology: Topology, group: ResolvedGroup, program: str, config: str, python: str, user: str) -> str:
    pool = topology.pool.name
    run = worker_run(
        topology, group, program=program, config=config, python=python, replica="%i", identity=f"{pool}/{group.name}/%i"
    )
    restart = group.restart
    exec_start = " ".join(_quote(word) for word in run.argv)
    exec_start = exec_start.replace("%%i", "%i")  # the replica number: systemd's instance name
    env = {**run.env, "PIPELEX_POOL_REPLICA": "%i"}
    environment = "\n".join(f"Environment={_quote(f'{k}={v}').replace('%%i', '%i')}" for k, v in env.items())
    key_env = api_key_env(topology)
    secret = (
        f"# The API key (${key_env}) is not copied here: put {key_env}=... in the file below (root-owned, mode 0600).\n"
        f"EnvironmentFile=/etc/pipelex-pool/{dns_name(pool)}.env\n"
        if key_env
        else ""
    )
    secret += credentials(topology)
    if run.env_files:
        secret += f"# [workers.{group.name}] env_file (systemd reads its KEY=VALUE lines, without ${{VAR}} expansion)\n"
        secret += "".join(f"EnvironmentFile={_quote(path)}\n" for path in run.env_files)
    watchdog = f"WatchdogSec={_seconds(run.watchdog)}\n" if run.watchdog else ""
    memory = f"MemoryMax={group.max_memory}\nOOMPolicy=stop\n" if group.max_memory else ""
    notify = group.command is None or group.readiness == "notify"
    return f"""\
# {dns_name(pool, group.name)}@N.service: replica N of group {group.name} of pool {pool}
# ({group.scope} on {group.task_queue}, profile {group.profile}), exported by `pipelex-pool export systemd`.
# Start them all with {dns_name(pool)}.target.

[Unit]
Description=pipelex-pool {pool}: {group.name} replica %i ({group.scope} on {group.task_queue})
After=network-online.target
Wants=network-online.target
PartOf={dns_name(pool)}.target
# the pool gives up (FATAL) after more than {restart.max_restarts} early deaths in {_seconds(restart.window)}
StartLimitIntervalSec={_seconds(restart.window)}
StartLimitBurst={restart.max_restarts + 1}

[Service]
Type={"notify" if notify else "exec"}
NotifyAccess=main
User={user}
Group={user}
{environment}
{secret}ExecStart={exec_start}
{watchdog}TimeoutStartSec={_seconds(group.start_timeout)}
# graceful_shutdown_timeout of profile {group.profile} plus the pool's margin: in-flight activities finish
TimeoutStopSec={_seconds(run.stop_timeout)}
KillMode=mixed
Restart={RESTART[restart.policy]}
RestartSec={_seconds(restart.backoff_initial)}
# exit 78: a configuration error, which restarting cannot fix
RestartPreventExitStatus=78
{memory}SyslogIdentifier={dns_name(pool, group.name)}-%i
{HARDENING}
[Install]
WantedBy={dns_name(pool)}.target
"""


def pool_target(topology: Topology) -> str:
    pool = dns_name(topology.pool.name)
    wants = [
        f"{dns_name(topology.pool.name, name)}@{n}.service"
        for name, group in topology.groups.items()
        for n in range(group.autoscale.min if group.autoscale else group.replicas)
    ]
    return f"""\
# {pool}.target: every replica of pool {topology.pool.name}, exported by `pipelex-pool export systemd`.
#   systemctl enable --now {pool}.target      start them (and at boot)
#   systemctl restart {pool}.target           restart them all (PartOf)

[Unit]
Description=pipelex-pool {topology.pool.name}: every worker replica
Wants={" ".join(wants)}

[Install]
WantedBy=multi-user.target
"""


def systemd_units(topology: Topology, program: str, config: str, user: str = "pipelex-pool") -> dict[str, str]:
    """File name -> unit text."""
    python = str(Path(program).with_name("python"))
    units = {
        f"{dns_name(topology.pool.name, name)}@.service": group_unit(topology, group, program, config, python, user)
        for name, group in topology.groups.items()
    }
    units[f"{dns_name(topology.pool.name)}.target"] = pool_target(topology)
    return units

"""The CLI's side of the control socket: find the pool's socket, send one request, read one answer."""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipelex_pool.contract import NAME_PATTERN
from pipelex_pool.control.protocol import MAX_FRAME, encode
from pipelex_pool.errors import ErrorCode, PoolError, PoolNotRunningError, TopologyError
from pipelex_pool.paths import resolve_paths, runtime_base
from pipelex_pool.topology.toml import read_toml

SOCKET_ENV = "PIPELEX_POOL_SOCKET"
SYSTEM_RUNTIME = Path("/run/pipelex-pool")  # RuntimeDirectory= of the shipped systemd units
DEFAULT_POOL = "pipelex"


class CommandFailed(PoolError):
    """The pool answered with an error (`code` from ErrorCode, or one this client does not know)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    @property
    def usage(self) -> bool:
        """The request itself was wrong (exit 2), rather than the pool failing to carry it out (exit 1)."""
        return self.code in ErrorCode.__members__.values() and ErrorCode(self.code).usage


def resolve_socket(
    explicit: Path | None,
    topology: Path | None,
    environ: Mapping[str, str] | None = None,
    system_dir: Path = SYSTEM_RUNTIME,
    pool: str | None = None,
) -> Path:
    """--socket, then $PIPELEX_POOL_SOCKET, then the topology's pool (-c), then the default pool's socket (or the
    only pool socket found under the runtime directory); where that socket does not exist, the shipped systemd
    units' (/run/pipelex-pool/control.sock, /run/pipelex-pool/<NAME>/control.sock) if one does."""
    environ = os.environ if environ is None else environ
    if explicit is not None:
        return explicit
    if environ.get(SOCKET_ENV):
        return Path(environ[SOCKET_ENV])
    if pool is not None:  # --pool NAME: that pool's socket where this user's pools keep theirs (or the units')
        ours = runtime_base(pool, environ) / "control.sock"
        return ours if ours.exists() else _first_existing([system_dir / pool / "control.sock"]) or ours
    if topology is not None:
        location = _pool_location(topology)
        ours = resolve_paths(location, topology.parent, environ).socket
        if ours.exists() or location.socket is not None or environ.get("RUNTIME_DIRECTORY"):
            return ours
        return _first_existing([system_dir / location.name / "control.sock", system_dir / "control.sock"]) or ours
    default = runtime_base(DEFAULT_POOL, environ) / "control.sock"
    if default.exists() or environ.get("RUNTIME_DIRECTORY"):
        return default
    found = sorted(default.parent.parent.glob("*/control.sock"))
    if len(found) == 1:
        return found[0]
    if len(found) > 1:  # several pools of this user, none the default one: say which, never guess
        pools = ", ".join(f"{path.parent.name} ({path})" for path in found)
        raise PoolError(
            f"{len(found)} pools run here and none is the default one ({DEFAULT_POOL!r}): {pools}; name one with "
            "--pool NAME, -c TOPOLOGY or --socket PATH (or $PIPELEX_POOL_SOCKET)"
        )
    system = sorted(system_dir.glob("*/control.sock"))
    return _first_existing([system_dir / "control.sock", *(system if len(system) == 1 else [])]) or default


def _first_existing(candidates: list[Path]) -> Path | None:
    return next((path for path in candidates if path.exists()), None)


@dataclass(frozen=True)
class _PoolLocation:
    name: str
    socket: str | None
    state_dir: str | None = None
    log_dir: str | None = None


def _pool_location(topology: Path) -> _PoolLocation:
    """The [pool] name and socket of a topology file, read without the whole topology model (a control command
    must not pay for pydantic and the task packs)."""
    try:
        raw = read_toml(topology).get("pool", {})
    except TopologyError as exc:
        raise PoolError(f"cannot read the pool's name and socket from {topology}: {exc}") from exc
    name = raw.get("name", DEFAULT_POOL)
    if not isinstance(name, str) or not re.fullmatch(NAME_PATTERN, name):
        raise PoolError(f"{topology}: [pool] name {name!r} is not a valid pool name; run `pipelex-pool validate`")
    paths = {key: raw.get(key) for key in ("socket", "state_dir", "log_dir")}
    for key, value in paths.items():
        if value is not None and not isinstance(value, str):
            raise PoolError(f"{topology}: [pool] {key} must be a path string; run `pipelex-pool validate`")
    return _PoolLocation(name, paths["socket"], paths["state_dir"], paths["log_dir"])


def logs_of(topology: Path, environ: Mapping[str, str] | None = None) -> tuple[Path, list[str]]:
    """A pool's log directory and group names, from its topology file alone: its logs stay readable while it is
    down, which is when a crash needs reading."""
    try:
        workers = read_toml(topology).get("workers", {})
    except TopologyError as exc:
        raise PoolError(f"cannot read the groups of {topology}: {exc}") from exc
    log_dir = resolve_paths(_pool_location(topology), topology.parent, environ).log_dir
    return log_dir, sorted(workers) if isinstance(workers, dict) else []


class ControlClient:
    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self.path = path
        self.timeout = timeout
        self._next_id = 0

    def call(self, cmd: str, args: dict[str, Any] | None = None) -> Any:
        """Send one request; return its result, raise CommandFailed (ok: false) or PoolNotRunningError."""
        self._next_id += 1
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            self._connect(sock)
            sock.sendall(encode({"id": self._next_id, "cmd": cmd, "args": args or {}}))
            response = self._read_line(sock)
        except TimeoutError as exc:
            raise PoolNotRunningError(f"the pool on {self.path} did not answer within {self.timeout:g}s") from exc
        finally:
            sock.close()
        if response.get("ok"):
            return response.get("result")
        error = response.get("error") or {}
        raise CommandFailed(str(error.get("code", "error")), str(error.get("message", "command failed")))

    def _connect(self, sock: socket.socket) -> None:
        try:
            sock.connect(str(self.path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise PoolNotRunningError(
                f"no pool answers on {self.path} ({exc.strerror}); start one with `pipelex-pool up TOPOLOGY`, "
                "or point at it with -c TOPOLOGY / --socket PATH"
            ) from exc
        except PermissionError as exc:
            raise PoolNotRunningError(
                f"cannot connect to {self.path}: permission denied (another user's pool?)"
            ) from exc

    def follow(self, args: dict[str, Any], tick: float) -> Iterator[dict[str, Any] | None]:
        """`subscribe`: each status frame as the pool sends it (on change, and every few seconds), and None when
        `tick` seconds pass with none (for the caller's own deadline). Raises PoolNotRunningError when the pool
        goes away, CommandFailed if it refuses."""
        self._next_id += 1
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            self._connect(sock)
            sock.sendall(encode({"id": self._next_id, "cmd": "subscribe", "args": args}))
            sock.settimeout(tick)
            buffered = b""
            while True:
                try:
                    chunk = sock.recv(65536)
                except TimeoutError:
                    yield None
                    continue
                if not chunk:
                    raise PoolNotRunningError(f"the pool on {self.path} closed the connection")
                buffered += chunk
                while b"\n" in buffered:
                    line, buffered = buffered.split(b"\n", 1)
                    frame: dict[str, Any] = json.loads(line)
                    if not frame.get("ok"):
                        error = frame.get("error") or {}
                        raise CommandFailed(str(error.get("code", "error")), str(error.get("message", "refused")))
                    if "status" in frame:
                        yield frame["status"]
                if len(buffered) > 64 * MAX_FRAME:
                    raise PoolError("frame too large")
        finally:
            sock.close()

    def _read_line(self, sock: socket.socket) -> dict[str, Any]:
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                if not data:
                    raise PoolNotRunningError(f"the pool on {self.path} closed the connection without answering")
                break
            data += chunk
            if len(data) > 64 * MAX_FRAME:
                raise PoolError("answer too large")
        result: dict[str, Any] = json.loads(data)
        return result

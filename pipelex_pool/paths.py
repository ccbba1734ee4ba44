"""Where a pool keeps its socket, lock, state and logs; shared by the supervisor and the CLI.

Order of precedence: the topology's [pool] keys, then systemd's $RUNTIME_DIRECTORY / $STATE_DIRECTORY /
$LOGS_DIRECTORY, then the XDG base directories: the socket, lock and notify sockets (gone at logout, as they
should be) in $XDG_RUNTIME_DIR/pipelex-pool/<name> (else a private 0700 directory under /tmp); the state (the
embedded dev server's database included) and the logs, which must outlive a logout, in
$XDG_STATE_HOME/pipelex-pool/<name> (else ~/.local/state/pipelex-pool/<name>).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from pipelex_pool.errors import PoolError

AF_UNIX_PATH_MAX = 107


@dataclass(frozen=True)
class PoolPaths:
    runtime_dir: Path
    socket: Path
    state_dir: Path
    log_dir: Path

    @property
    def lock(self) -> Path:
        """Beside the socket: one supervisor per socket, so one per pool."""
        return self.socket.with_name(self.socket.name + ".lock")

    @property
    def notify_dir(self) -> Path:
        return self.runtime_dir / "notify"

    @property
    def state_file(self) -> Path:
        return self.state_dir / "children.json"


class PoolLocation(Protocol):
    """What the paths depend on: the [pool] keys (topology.schema.PoolSection has them; the CLI reads them alone,
    without pydantic, to stay light)."""

    @property
    def name(self) -> str: ...
    @property
    def socket(self) -> str | None: ...
    @property
    def state_dir(self) -> str | None: ...
    @property
    def log_dir(self) -> str | None: ...


def runtime_base(name: str, environ: Mapping[str, str]) -> Path:
    if environ.get("RUNTIME_DIRECTORY"):
        return Path(environ["RUNTIME_DIRECTORY"].split(":")[0])
    if environ.get("XDG_RUNTIME_DIR"):
        return Path(environ["XDG_RUNTIME_DIR"]) / "pipelex-pool" / name
    return Path("/tmp") / f"pipelex-pool-{os.getuid()}" / name


def state_base(name: str, environ: Mapping[str, str]) -> Path:
    """$XDG_STATE_HOME/pipelex-pool/<name>, else ~/.local/state/pipelex-pool/<name>; with no home at all, the
    runtime directory's `state` (as before, and as lost at logout)."""
    if environ.get("XDG_STATE_HOME"):
        return Path(environ["XDG_STATE_HOME"]) / "pipelex-pool" / name
    home = environ.get("HOME")
    if home and home != "/":
        return Path(home) / ".local" / "state" / "pipelex-pool" / name
    return runtime_base(name, environ) / "state"


def _resolve(value: str | None, base: Path) -> Path | None:
    return None if value is None else (base / value).resolve()


def resolve_paths(pool: PoolLocation, topology_dir: Path, environ: Mapping[str, str] | None = None) -> PoolPaths:
    environ = os.environ if environ is None else environ
    base = runtime_base(pool.name, environ)
    socket = _resolve(pool.socket, topology_dir) or base / "control.sock"
    state = _resolve(pool.state_dir, topology_dir)
    if state is None:
        state = (
            Path(environ["STATE_DIRECTORY"].split(":")[0])
            if environ.get("STATE_DIRECTORY")
            else state_base(pool.name, environ)
        )
    logs = _resolve(pool.log_dir, topology_dir)
    if logs is None:
        logs = Path(environ["LOGS_DIRECTORY"].split(":")[0]) if environ.get("LOGS_DIRECTORY") else state / "logs"
    return PoolPaths(runtime_dir=socket.parent if pool.socket else base, socket=socket, state_dir=state, log_dir=logs)


def open_private_file(path: Path, *, truncate: bool = False) -> BinaryIO:
    """Open a log or state file of the pool for writing: created 0600 (its directory recreated if something
    removed it), never through a symbolic link, never anything but a regular file (a planted link or FIFO is
    refused, naming the path)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_TRUNC if truncate else os.O_APPEND)
    try:
        fd = os.open(path, flags | os.O_NONBLOCK, 0o600)  # (non-blocking: a FIFO must not hang the open)
    except OSError as exc:
        why = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror
        raise PoolError(f"cannot open {path} for writing: {why}; remove it or fix its permissions") from exc
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise PoolError(f"{path} is not a regular file (a FIFO, device or directory): remove it")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "wb" if truncate else "ab")


def private_dir(path: Path) -> Path:
    """Create `path` as 0700 (and its missing parents: also 0700) and check it; raise PoolError otherwise. The
    mode of a directory the pool did not create is never changed: an unsafe one is refused with the fix. `path`
    itself must be ours and writable by us alone (the socket in it is 0600 and checks its peers); under /tmp each
    directory below /tmp is checked before anything is created in it (ours or root's, not writable by others unless
    sticky), so another user cannot plant one for us."""
    if path.is_relative_to("/tmp"):
        chain = [p for p in reversed((path, *path.parents)) if p.is_relative_to("/tmp") and p != Path("/tmp")]
    else:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        chain = [path]
    for directory in chain:
        if not directory.exists():
            directory.mkdir(mode=0o700)
        _check_directory(directory, private=directory == path)
    return path


def _check_directory(directory: Path, *, private: bool) -> None:
    info = directory.lstat()
    owners = (os.getuid(),) if private else (os.getuid(), 0)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode) or info.st_uid not in owners:
        raise PoolError(
            f"{directory} is not a directory owned by uid {os.getuid()}: refusing to use it for the pool's socket "
            "and state; remove it or set [pool] socket/state_dir"
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022 and (private or not mode & stat.S_ISVTX):
        raise PoolError(
            f"{directory} has mode {mode:o}: other users can replace what is below it; run `chmod go-w {directory}`, "
            "or set [pool] socket/state_dir elsewhere"
        )


def check_socket_path(path: Path) -> None:
    if len(str(path)) > AF_UNIX_PATH_MAX:
        raise PoolError(
            f"socket path {path} is {len(str(path))} bytes, over the AF_UNIX limit of {AF_UNIX_PATH_MAX}; "
            "set a shorter [pool] socket"
        )

"""Socket and directory resolution (shared by server and CLI), and size-rotated replica logs."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pipelex_pool.control.client import resolve_socket
from pipelex_pool.errors import PoolError
from pipelex_pool.paths import private_dir, resolve_paths
from pipelex_pool.supervisor.spawning.logfile import RotatingLog
from pipelex_pool.topology.schema import PoolSection
from tests.pool import cli_args


def test_socket_resolution_order(tmp_path: Path) -> None:
    topology = tmp_path / "t.toml"
    topology.write_text('[pool]\nname = "alpha"\n')
    env = {"XDG_RUNTIME_DIR": "/run/user/1000"}
    assert resolve_socket(Path("/x.sock"), topology, {**env, "PIPELEX_POOL_SOCKET": "/y.sock"}) == Path("/x.sock")
    assert resolve_socket(None, topology, {**env, "PIPELEX_POOL_SOCKET": "/y.sock"}) == Path("/y.sock")
    assert resolve_socket(None, topology, env) == Path("/run/user/1000/pipelex-pool/alpha/control.sock")
    assert resolve_socket(None, topology, {"RUNTIME_DIRECTORY": "/run/pipelex-pool"}) == Path(
        "/run/pipelex-pool/control.sock"
    )
    topology.write_text('[pool]\nname = "alpha"\nsocket = "run/ctl.sock"\n')
    assert resolve_socket(None, topology, env) == tmp_path / "run" / "ctl.sock"
    # no runtime directory of the user's: /tmp/pipelex-pool-<uid>, unless that holds a pool already (not asked here)
    alone = tmp_path / "xdg-alone"
    assert resolve_socket(None, None, {"XDG_RUNTIME_DIR": str(alone)}) == alone / "pipelex-pool/pipelex/control.sock"


def test_several_pools_without_a_name_are_named_not_guessed(tmp_path: Path) -> None:
    env = {"XDG_RUNTIME_DIR": str(tmp_path)}
    for name in ("alpha", "beta"):
        (tmp_path / "pipelex-pool" / name).mkdir(parents=True)
        (tmp_path / "pipelex-pool" / name / "control.sock").touch()
    with pytest.raises(PoolError) as caught:
        resolve_socket(None, None, env, tmp_path / "no-system")
    message = str(caught.value)
    assert "2 pools run here" in message and "alpha (" in message and "beta (" in message and "-c TOPOLOGY" in message
    assert "--pool NAME" in message
    beta = tmp_path / "pipelex-pool/beta/control.sock"
    assert resolve_socket(None, None, env, tmp_path / "no-system", pool="beta") == beta  # --pool beta picks it
    result = subprocess.run(
        cli_args("status", "--pool", "gamma"), capture_output=True, text=True, timeout=60, env={**os.environ, **env}
    )
    assert result.returncode == 3 and "gamma/control.sock" in result.stderr, result.stderr  # that pool, not a guess
    (tmp_path / "pipelex-pool" / "beta" / "control.sock").unlink()
    assert resolve_socket(None, None, env, tmp_path / "no-system") == tmp_path / "pipelex-pool/alpha/control.sock"


def test_the_shipped_units_socket_is_found_when_the_pool_s_own_is_absent(tmp_path: Path) -> None:
    """`-c /etc/pipelex-pool/topology.toml` from a login shell finds the service's socket under /run."""
    topology, system = tmp_path / "t.toml", tmp_path / "run-pipelex-pool"
    topology.write_text('[pool]\nname = "alpha"\n')
    env = {"XDG_RUNTIME_DIR": str(tmp_path / "xdg")}
    ours = tmp_path / "xdg" / "pipelex-pool" / "alpha" / "control.sock"
    assert resolve_socket(None, topology, env, system) == ours  # nothing anywhere: the pool's own path
    (system / "alpha").mkdir(parents=True)
    (system / "control.sock").touch()
    assert resolve_socket(None, topology, env, system) == system / "control.sock"  # pipelex-pool.service
    (system / "alpha" / "control.sock").touch()
    assert resolve_socket(None, topology, env, system) == system / "alpha" / "control.sock"  # pipelex-pool@alpha
    assert resolve_socket(None, None, env, system) == system / "control.sock"
    ours.parent.mkdir(parents=True)
    ours.touch()
    assert resolve_socket(None, topology, env, system) == ours  # a pool of this user's own comes first


def test_state_and_logs_outlive_a_logout(tmp_path: Path) -> None:
    """Outside systemd the embedded dev server's database and the logs are under $XDG_STATE_HOME (else
    ~/.local/state), not under $XDG_RUNTIME_DIR, which is wiped at logout; the socket stays there."""
    env = {"XDG_RUNTIME_DIR": "/run/user/1000", "XDG_STATE_HOME": "/home/u/.state", "HOME": "/home/u"}
    paths = resolve_paths(PoolSection(name="p"), tmp_path, env)
    assert paths.socket == Path("/run/user/1000/pipelex-pool/p/control.sock")
    assert (paths.state_dir, paths.log_dir) == (
        Path("/home/u/.state/pipelex-pool/p"),
        Path("/home/u/.state/pipelex-pool/p/logs"),
    )
    paths = resolve_paths(PoolSection(name="p"), tmp_path, {"XDG_RUNTIME_DIR": "/run/user/1000", "HOME": "/home/u"})
    assert paths.state_dir == Path("/home/u/.local/state/pipelex-pool/p")
    assert not str(paths.state_dir).startswith("/run/user")


def test_systemd_directories_win_over_xdg(tmp_path: Path) -> None:
    env = {
        "RUNTIME_DIRECTORY": "/run/p",
        "STATE_DIRECTORY": "/var/lib/p",
        "LOGS_DIRECTORY": "/var/log/p",
        "XDG_RUNTIME_DIR": "/x",
    }
    paths = resolve_paths(PoolSection(name="p"), tmp_path, env)
    assert (paths.socket, paths.state_dir, paths.log_dir) == (
        Path("/run/p/control.sock"),
        Path("/var/lib/p"),
        Path("/var/log/p"),
    )
    assert paths.lock == Path("/run/p/control.sock.lock")


def test_private_dir_refuses_a_directory_owned_by_someone_else(tmp_path: Path) -> None:
    mine = private_dir(tmp_path / "a" / "b")
    assert mine.stat().st_mode & 0o777 == 0o700
    if os.geteuid() != 0:
        pytest.skip("needs root to create a directory owned by another uid")
    foreign = Path("/tmp") / f"pp-foreign-{os.getpid()}"
    foreign.mkdir(mode=0o777)
    try:
        os.chown(foreign, 65534, 65534)
        with pytest.raises(PoolError, match="not a directory owned by uid"):
            private_dir(foreign / "pool")
    finally:
        shutil.rmtree(foreign)


def test_rotating_log_keeps_backups_by_size(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "llm-0.log", max_bytes=100, backups=2)
    for n in range(10):
        log.write(f"line {n:02d} ".encode() * 4 + b"\n")  # 41 bytes each
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["llm-0.log", "llm-0.log.1", "llm-0.log.2"]
    assert all(p.stat().st_size <= 100 for p in tmp_path.iterdir())
    newest, older = (tmp_path / "llm-0.log").read_text(), (tmp_path / "llm-0.log.1").read_text()
    assert newest.splitlines()[-1].startswith("line 09") and older.splitlines()[-1].startswith("line 08")


def test_a_removed_log_directory_or_an_unwritable_log_never_stops_the_output_or_raises(tmp_path: Path) -> None:
    """An operator removes the log directory: the next rotation finds no file to keep and starts a new one; while
    the file cannot be opened at all (a regular file where its directory was), output is dropped, counted and
    said once, then written again as soon as it can be."""
    logs = tmp_path / "logs"
    log = RotatingLog(logs / "llm-0.log", max_bytes=100, backups=2)
    log.write(b"a" * 60 + b"\n")
    shutil.rmtree(logs)
    log.write(b"b" * 60 + b"\n")  # over max_bytes: a rotation, with no file left to rename
    assert (logs / "llm-0.log").read_bytes() == b"b" * 60 + b"\n" and log.failing is None
    shutil.rmtree(logs)
    logs.write_text("not a directory")
    log.write(b"c" * 60 + b"\n")  # rotation: the old file cannot be renamed nor a new one opened
    log.write(b"d" * 10 + b"\n")
    assert log.failing is not None and log.dropped == 61 + 11
    logs.unlink()
    log.write(b"e" * 10 + b"\n")
    assert log.failing is None and (logs / "llm-0.log").read_bytes() == b"e" * 10 + b"\n"
    log.close()


LOG_A_WARNING = """
import structlog
from pipelex_pool.logs import configure_logging
configure_logging()
structlog.get_logger("t").warning("disk.almost_full", free="1%")
structlog.get_logger("t").info("all.fine")
"""


def test_journald_sees_each_line_s_priority_only_on_its_own_stream(tmp_path: Path) -> None:
    """On the stream systemd connected ($JOURNAL_STREAM = its device:inode) each JSON line starts with <N>, its
    syslog priority; a process whose stderr goes elsewhere (a worker's log file) inherits the variable, not the
    prefix."""
    journal, elsewhere = tmp_path / "journal", tmp_path / "elsewhere"
    journal.touch()
    info = os.stat(journal)
    env = {**os.environ, "JOURNAL_STREAM": f"{info.st_dev}:{info.st_ino}"}
    for target in (journal, elsewhere):
        with target.open("a") as stderr:
            subprocess.run([sys.executable, "-c", LOG_A_WARNING], stderr=stderr, env=env, check=True, timeout=60)
    on_journal = journal.read_text().splitlines()
    assert on_journal[0].startswith('<4>{"free": "1%", "event": "disk.almost_full"') and on_journal[1].startswith(
        "<6>{"
    )
    assert all(line.startswith("{") for line in elsewhere.read_text().splitlines())


def test_private_dir_changes_no_mode_it_did_not_set_and_refuses_an_unsafe_ancestor() -> None:
    """A working directory of 0711 under /tmp stays 0711 (it used to become 0700); one that others may write to
    is refused with the fix, not changed."""
    base = Path(tempfile.mkdtemp(prefix="pp-modes-", dir="/tmp"))
    try:
        work = base / "work"
        work.mkdir()
        os.chmod(work, 0o711)
        made = private_dir(work / "pool" / "run")
        assert stat.S_IMODE(work.stat().st_mode) == 0o711
        assert stat.S_IMODE(made.stat().st_mode) == stat.S_IMODE(made.parent.stat().st_mode) == 0o700
        os.chmod(work, 0o777)
        with pytest.raises(PoolError, match=r"has mode 777: .*chmod go-w"):
            private_dir(work / "other")
        assert stat.S_IMODE(work.stat().st_mode) == 0o777 and not (work / "other").exists()
    finally:
        shutil.rmtree(base)


def test_wait_ready_says_at_once_that_no_supervisor_runs_instead_of_waiting_its_timeout(tmp_path: Path) -> None:
    socket = tmp_path / "ctl.sock"
    result = subprocess.run(
        cli_args("wait-ready", "--socket", str(socket)), capture_output=True, text=True, timeout=300
    )  # fmt: skip  (a hang guard: its own --timeout is 600 s)
    assert result.returncode == 3, result.stderr
    assert f"no supervisor runs for this pool: nothing answers on {socket}" in result.stderr
    assert "start it with `pipelex-pool up TOPOLOGY`" in result.stderr

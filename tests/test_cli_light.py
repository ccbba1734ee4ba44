"""Control commands stay light: they import neither temporalio nor pydantic nor the task packs (what made
`status` take half a second), whether the pool is found by its socket or by its topology file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("temporalio", "pydantic", "pipelex_pool.sim", "pipelex_pool.topology.load", "psutil")


def imported_by(runtime_dir: Path, *args: str) -> set[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RUNTIME_DIRECTORY", "PIPELEX_POOL_SOCKET")}
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "pipelex_pool", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "XDG_RUNTIME_DIR": str(runtime_dir)},  # no pool there: the lookup runs, nothing answers
    )
    assert result.returncode == 3, result.stderr  # no pool answers: exit 3, after the whole lookup ran
    return {line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}


@pytest.mark.parametrize(
    "args",
    [
        ("status", "--socket", "/nonexistent/ctl.sock"),
        ("status", "-c", str(REPO / "configs" / "topology.toml")),
        ("restart-failed", "-c", str(REPO / "configs" / "topology.toml")),
        ("scale", "llm", "3", "-c", str(REPO / "configs" / "topology.toml")),
    ],
)
def test_control_commands_import_nothing_heavy(args: tuple[str, ...], tmp_path: Path) -> None:
    modules = imported_by(tmp_path, *args)
    heavy = sorted(m for m in modules if m.startswith(HEAVY))
    assert not heavy, f"`pipelex-pool {' '.join(args)}` imported {heavy[:5]}"
    assert "pipelex_pool.control.client" in modules  # the lookup really ran


@pytest.mark.parametrize("command", [("reload", "--wait"), ("restart", "llm", "--wait"), ("stop", "llm", "--wait")])
def test_an_error_names_the_command_the_user_ran(command: tuple[str, ...], tmp_path: Path) -> None:
    """`reload --wait` asks for the status first; when no pool answers, the error is still reload's."""
    result = subprocess.run(
        [sys.executable, "-m", "pipelex_pool", *command, "--socket", str(tmp_path / "none.sock")],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 3
    assert result.stderr.startswith(f"pipelex-pool {command[0]}: no pool answers on {tmp_path / 'none.sock'}")


def test_wait_ready_on_a_file_up_refuses_says_so_at_once(tmp_path: Path) -> None:
    """`up` exits on a broken topology: `wait-ready -c` must not wait its 600 s for a pool that will never come."""
    broken = tmp_path / "topology.toml"
    broken.write_text('[pool]\nname = "p"\nsocket = "ctl.sock"\n[workers.llm]\nscope = "runner-llm"\nreplicas = -1\n')
    result = subprocess.run(
        [sys.executable, "-m", "pipelex_pool", "wait-ready", "-c", str(broken), "--timeout", "600"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert "workers.llm.replicas" in result.stderr and "`up` refuses it" in result.stderr

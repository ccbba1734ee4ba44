"""The fork server spawner on its own, in a separate process (it makes its process a child subreaper, which the
test session itself must not become): forked children are its own, their output and exit status come through,
anything that is not the built-in worker is exec'd."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PROBE = """
import json, os, signal, sys
import anyio, psutil
from pipelex_pool.supervisor.spawning.fork_spawner import ForkedChild, ForkSpawner
from pipelex_pool.supervisor.spawning.spawner import BUILTIN_WORKER, ChildSpec, child_environment

async def output(child):
    data = b""
    async for chunk in child.stdout:
        data += chunk
    return data.decode()

async def main():
    spawner, env, found, registered = ForkSpawner(), child_environment(), {}, []
    helped = [*BUILTIN_WORKER, "worker", "--help"]
    child = await spawner.spawn(ChildSpec("help", helped, env, "help"), registered.append)
    found["pids"] = [child.pid]
    usage = "Usage: pipelex-pool worker" in await output(child)
    found["help"] = [isinstance(child, ForkedChild), usage, await child.wait()]
    config = sys.argv[1]
    argv = [*BUILTIN_WORKER, "worker", "--config", config, "--task-queue", "llm_qq"]
    child = await spawner.spawn(ChildSpec("bad-queue", argv, env, "bad-queue"), registered.append)
    found["pids"].append(child.pid)
    parent = psutil.Process(child.pid).ppid()  # (a zombie until waited for: still ours)
    text = await output(child)
    found["bad_queue"] = [isinstance(child, ForkedChild), parent == os.getpid(), text, await child.wait()]
    child = await spawner.spawn(ChildSpec("sleep", ["sleep", "30"], env, "sleep"), registered.append)
    found["registered"] = registered == [*found.pop("pids", []), child.pid] and len(registered) == 3
    os.kill(child.pid, signal.SIGKILL)
    found["other"] = [isinstance(child, ForkedChild), await child.wait()]
    servers = spawner.own_pids()
    await spawner.aclose()
    found["servers_left"] = [pid for pid in servers if psutil.pid_exists(pid)]
    print(json.dumps(found), flush=True)
    os._exit(0)  # (see pipelex_pool.cli: no interpreter teardown after temporalio was imported)

anyio.run(main)
"""


def test_fork_spawner_children_output_and_exit_status() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(REPO / "configs" / "topology.toml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.splitlines()[-1])
    assert found["help"] == [True, True, 0]
    assert found["registered"], "every child, forked or exec'd, is registered with its pid"
    forked, adopted, text, code = found["bad_queue"]
    assert forked and adopted and code == 78  # EX_CONFIG, decoded from the adopted child's own exit status
    assert "configuration error: --task-queue 'llm_qq'" in text and "Did you mean 'llm_q'?" in text
    assert found["other"] == [False, -9]  # not the built-in worker: exec'd, SIGKILL seen as such
    assert found["servers_left"] == []


EARLY = """
import json, os, sys
import anyio, psutil
from pipelex_pool.packs import AppRef
from pipelex_pool.supervisor.spawning.fork_spawner import ForkSpawner
from pipelex_pool.supervisor.spawning.server_process import early_fork_server, start_fork_server
from pipelex_pool.supervisor.spawning.spawner import BUILTIN_WORKER, ChildSpec, child_environment

async def help_exit(spawner):
    env, helped = child_environment(), [*BUILTIN_WORKER, "worker", "--help"]
    child = await spawner.spawn(ChildSpec("help", helped, env, "help"), lambda pid: None)
    async for _ in child.stdout:
        pass
    return await child.wait()

async def main():
    found = {}
    early = early_fork_server(__import__("pathlib").Path(sys.argv[1]))  # the shipped topology: fork, no preload
    spawner = ForkSpawner(early=early)
    found["early"] = [await help_exit(spawner), spawner.own_pids() == {early.pid}]
    await spawner.aclose()
    other = start_fork_server()  # started without preload, for a topology that preloads: not used, retired
    spawner = ForkSpawner(preload=AppRef("pipelex_pool.sim:packs"), early=other)
    code = await help_exit(spawner)
    found["mismatch"] = [code, other.pid not in spawner.own_pids(), psutil.pid_exists(other.pid)]
    servers = spawner.own_pids()
    await spawner.aclose()
    found["servers_left"] = [pid for pid in servers | {early.pid, other.pid} if psutil.pid_exists(pid)]
    print(json.dumps(found), flush=True)
    os._exit(0)

anyio.run(main)
"""


def test_a_fork_server_started_before_validation_is_used_only_if_it_fits(tmp_path: Path) -> None:
    """`up` starts a fork server first thing (the shipped topology: fork, no preload): the spawner forks from it;
    one that does not fit the topology (it preloads) is retired and reaped, never used."""
    exec_topology = tmp_path / "exec.toml"
    exec_topology.write_text('[pool]\nspawner = "exec"\n')
    code = "import sys, pathlib; from pipelex_pool.supervisor.spawning.server_process import early_fork_server as e;"
    for name in ("exec.toml", "missing.toml"):  # an exec'd pool, or a file that cannot be read: nothing started
        peek = subprocess.run(
            [sys.executable, "-c", f"{code} print(e(pathlib.Path(sys.argv[1])))", str(tmp_path / name)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert peek.stdout.strip() == "None", peek.stderr
    result = subprocess.run(
        [sys.executable, "-c", EARLY, str(REPO / "configs" / "topology.toml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.splitlines()[-1])
    assert found["early"] == [0, True]  # forked from the early server (the only server the spawner has)
    assert found["mismatch"] == [0, True, False]  # another server made the child; the early one exited, reaped
    assert found["servers_left"] == []


def test_a_fork_server_whose_supervisor_left_before_its_greeting_exits_without_a_word() -> None:
    """What an `up` that refuses to start leaves behind: the fork server it started first finds its socket closed
    when it has booted; it exits, 0, and writes nothing on the terminal `up` shared with it."""
    probe = (
        "from pipelex_pool.supervisor.spawning.server_process import start_fork_server\n"
        "server = start_fork_server()\n"
        "server.sock.close()\n"
        "print(server.process.wait(60))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0"
    assert result.stderr == ""

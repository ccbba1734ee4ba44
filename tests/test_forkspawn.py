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

"""The warm spawner: built-in workers are forked from a fork server that has already imported temporalio, so a
crashed replica is back in a fraction of a cold start. Anything else (the dev server, a group's own command) and
any failure of the fork server goes to the plain exec spawner, so a spawn never fails because of this path."""

from __future__ import annotations

import array
import json
import os
import signal
import socket
import time
from typing import Any

import anyio
import psutil
import structlog
from anyio.abc import ByteReceiveStream, UNIXSocketStream

from pipelex_pool.packs import AppRef
from pipelex_pool.parent_death import become_child_subreaper
from pipelex_pool.supervisor.spawning.fork_server import GO
from pipelex_pool.supervisor.spawning.server_process import ServerProcess, start_fork_server
from pipelex_pool.supervisor.spawning.spawner import (
    BUILTIN_WORKER,
    Child,
    ChildSpec,
    ExecSpawner,
    Register,
    RegistrationFailed,
    Spawner,
    signal_group,
)

log = structlog.get_logger("pipelex_pool.spawn")
ZYGOTE_READY_TIMEOUT_S = 30.0
REQUEST_TIMEOUT_S = 10.0
REST_AFTER_FAILURE_S = 60.0


class ForkedChild:
    """A process the fork server made and the supervisor adopted: waited for through a pidfd."""

    def __init__(self, pid: int, stdout: ByteReceiveStream, waited_for: set[int]) -> None:
        self.pid = pid
        self.stdout: ByteReceiveStream | None = stdout
        self.returncode: int | None = None
        self._pidfd = os.pidfd_open(pid)
        self._waited_for = waited_for  # the spawner's record of the children it must not reap as orphans (has pid)

    async def wait(self) -> int:
        if self.returncode is None:
            await anyio.wait_readable(self._pidfd)  # readable once the process has exited
            try:
                _, status = os.waitpid(self.pid, os.WNOHANG)  # noqa: ASYNC222 (it has exited: this does not block)
                self.returncode = os.waitstatus_to_exitcode(status)
            except ChildProcessError:  # reaped by someone else: its status is lost
                self.returncode = 255
            os.close(self._pidfd)
            self._waited_for.discard(self.pid)
        return self.returncode

    async def aclose(self) -> None:
        if self.stdout is not None:
            await self.stdout.aclose()
        await self.wait()


class ForkServerError(Exception):
    pass


class ForkSpawner:
    """Forks built-in workers from a warm fork server; execs everything else (and everything, if it fails)."""

    def __init__(
        self, fallback: Spawner | None = None, preload: AppRef | None = None, early: ServerProcess | None = None
    ) -> None:
        self.fallback = fallback or ExecSpawner()
        self.preload = preload  # the task packs the fork server imports before forking
        self.adopting = become_child_subreaper()
        self._early = early  # a fork server `up` started before its own imports: the first one, if it fits
        self._server: ServerProcess | None = None
        self._retired: list[ServerProcess] = []
        self._children: set[int] = set()  # forked children not waited for yet
        self._sock: socket.socket | None = None
        self._lock = anyio.Lock()
        self._resting_until = 0.0
        self._stale = False  # retire the fork server before the next request
        if not self.adopting:
            log.warning("spawn.fork_server_disabled", reason="cannot become a child subreaper (prctl refused)")

    async def spawn(self, spec: ChildSpec, register: Register) -> Child:
        prefix, args = spec.argv[: len(BUILTIN_WORKER)], spec.argv[len(BUILTIN_WORKER) :]
        if prefix != BUILTIN_WORKER or args[:1] != ["worker"]:  # only the worker is forked; the rest exec'd
            return await self.fallback.spawn(spec, register)
        if not self.adopting or time.monotonic() < self._resting_until:
            return await self.fallback.spawn(spec, register)
        async with self._lock:
            if self._stale:
                self._retire()
            try:
                return await self._fork(args, spec, register)
            except RegistrationFailed:
                raise  # the fork server is fine; exec would fail the same way
            except Exception as exc:  # whatever went wrong on the warm path, exec is always there
                log.warning(
                    "spawn.fork_server_failed", child=spec.name, error=str(exc) or type(exc).__name__, next="exec"
                )
                self._retire()
                self._resting_until = time.monotonic() + REST_AFTER_FAILURE_S  # exec meanwhile, retry later
        return await self.fallback.spawn(spec, register)

    def own_pids(self) -> set[int]:
        """The pids this spawner waits for: the fork servers and the children it forked."""
        return {p.pid for p in [self._server, *self._retired] if p is not None} | self._children

    def signal(self, pid: int, signum: int) -> None:
        signal_group(pid, signum)

    def reap_orphans(self, known: set[int]) -> list[int]:
        return reap_adopted_orphans(known | self.own_pids()) if self.adopting else []

    def refresh(self, preload: AppRef | None = None) -> None:
        """Retire the fork server: the next spawn starts a new one, which imports the code installed now (and
        preloads `preload`). (A request in flight finishes first: the socket is closed only between requests.)"""
        self.preload = preload
        self._stale = True
        if not self._lock.locked():
            self._retire()

    def _retire(self) -> None:
        """Close the fork server's socket (it exits on EOF); it is reaped before the next one starts. One started
        early and not used yet goes too (it imported the code installed before)."""
        self._stale = False
        if self._early is not None:
            self._early.sock.close()
            self._retired.append(self._early)
            self._early = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._server is not None:
            self._retired.append(self._server)
            self._server = None

    async def aclose(self) -> None:
        self._retire()
        await self._reap_retired()

    async def _fork(self, args: list[str], spec: ChildSpec, register: Register) -> Child:
        sock = await self._ensure_server()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            request = {"command": BUILTIN_WORKER, "args": args, "env": spec.env, "supervisor_pid": os.getpid()}
            with anyio.fail_after(REQUEST_TIMEOUT_S):
                await _send(sock, json.dumps(request).encode(), theirs.fileno())
                answer = await _receive(sock)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        if "pid" not in answer:
            ours.close()
            raise ForkServerError(str(answer.get("error", answer)))
        pid = int(answer["pid"])
        self._children.add(pid)  # before the next await: the orphan reaper must never take it
        try:
            child = ForkedChild(pid, await UNIXSocketStream.from_socket(ours), self._children)
        except BaseException:
            ours.close()  # the child reads EOF instead of its go-ahead and exits without running
            self._children.discard(pid)
            raise
        try:
            register(pid)  # in the pool's state file before it runs: never an untracked worker
        except Exception as exc:
            with anyio.CancelScope(shield=True):
                await child.aclose()  # EOF instead of the go-ahead: it exits without running
            raise RegistrationFailed(f"cannot record pid {pid}: {exc}") from exc
        ours.send(GO)  # the child runs only now, once the pool holds it
        return child

    async def _ensure_server(self) -> socket.socket:
        if self._sock is not None and self._server is not None and self._server.returncode is None:
            return self._sock
        early, self._early = self._early, None
        if early is not None and (early.preload != self.preload or early.returncode is not None):
            self._early, early = early, None  # not what this topology wants: retired below
        self._retire()
        await self._reap_retired()
        self._server = early or start_fork_server(self.preload)
        ours = self._sock = self._server.sock
        with anyio.fail_after(ZYGOTE_READY_TIMEOUT_S):
            hello = await _receive(ours)
        if not hello.get("ready"):
            raise ForkServerError(f"unexpected greeting {hello!r}")
        log.info("spawn.fork_server_ready", pid=self._server.pid, preloaded=hello.get("preloaded"))
        if hello.get("preload_error"):
            log.warning(
                "spawn.preload_failed",
                app=self.preload.spec if self.preload else None,
                error=hello["preload_error"],
                effect="each worker imports the task packs itself (and reports the same error in its log)",
            )
        return ours

    async def _reap_retired(self) -> None:
        with anyio.CancelScope(shield=True):
            while self._retired:
                server = self._retired.pop()
                with anyio.move_on_after(2):
                    await server.wait()
                if server.returncode is None:
                    server.process.send_signal(signal.SIGKILL)
                    await server.wait()


def reap_adopted_orphans(known: set[int]) -> list[int]:
    """As a child subreaper the supervisor also adopts whatever its workers leave behind: reap those that exited
    (never a pid the pool or asyncio waits for itself). Returns the pids reaped. Reads the kernel's list of this
    process's children and their state (a few small files), not the whole process table."""
    reaped = []
    for pid in _children() - known:
        try:
            with open(f"/proc/{pid}/stat", "rb") as stat:
                text = stat.read()
            if text[text.rfind(b")") + 2 : text.rfind(b")") + 3] != b"Z":
                continue
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                reaped.append(pid)
        except (OSError, ChildProcessError):
            continue
    return reaped


def _children() -> set[int]:
    found: set[int] = set()
    try:
        for task in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{task}/children") as children:
                found.update(int(pid) for pid in children.read().split())
    except OSError:  # a kernel without /proc/<pid>/task/<tid>/children: ask psutil
        found = {child.pid for child in psutil.Process().children()}
    return found


async def _send(sock: socket.socket, payload: bytes, fd: int) -> None:
    await anyio.wait_writable(sock)
    sock.sendmsg([payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]).tobytes())])


async def _receive(sock: socket.socket) -> dict[str, Any]:
    while True:
        await anyio.wait_readable(sock)
        try:
            data = sock.recv(1 << 16)
        except BlockingIOError:
            continue
        if not data:
            raise ForkServerError("the fork server exited")
        answer = json.loads(data)
        if not isinstance(answer, dict):
            raise ForkServerError(f"unexpected answer {answer!r}")
        return answer

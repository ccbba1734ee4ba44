"""The fork server: `python -u -m pipelex_pool.supervisor.spawning.fork_server FD [APP APP_PATH]`, started by the
supervisor.

It imports temporalio and the built-in worker once (and creates no Temporal Runtime or Client, which must not
cross a fork), and with `[pool] preload = true` the application's task packs (APP, `module:attr`), then freezes
what it imported out of the garbage collector's reach (so children share those pages copy-on-write), then waits
on FD, a SOCK_SEQPACKET socket to the supervisor. Each request is a JSON object
{"args": [...], "env": {...}, "supervisor_pid": N} carrying one file descriptor (the child's stdout and stderr);
the answer is {"pid": N} or {"error": "..."}.

A child is double-forked: the intermediate process exits at once, so the child is adopted by the supervisor (a
child subreaper), which waits for it and reads its exit status as for any child it spawned itself. The child waits
until it has been adopted, and for the supervisor's go-ahead on its output socket (EOF instead: the supervisor
gave up on this request, so it exits), before it runs the worker.
Without preload each child imports the task packs itself; with it, new application code needs `restart` or
`reload` (both retire the fork server, and the next one imports the code installed then).
"""

from __future__ import annotations

import array
import gc
import json
import os
import signal
import socket
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pipelex_pool.lean import import_structlog_without_rich
from pipelex_pool.parent_death import set_parent_death_signal

if TYPE_CHECKING:
    from pipelex_pool.packs import AppRef

ADOPTION_TIMEOUT_S = 5.0
EXIT_NOT_ADOPTED = 70  # EX_SOFTWARE: the supervisor did not adopt the child (not a subreaper?)
MAX_REQUEST = 1 << 20
GO = b"\x01"  # the supervisor's go-ahead, on the child's output socket


def preload(app: AppRef | None) -> str | None:
    """What every worker imports anyway (the SDK, the worker, the CLI) and the application's task packs if `app`
    is given; returns why the packs could not be imported (each child then imports them itself, and fails there
    with the same error in its log)."""
    import anyio._backends._asyncio  # noqa: F401 (what anyio.run loads on first use)
    import setproctitle
    import temporalio.client  # noqa: F401
    import temporalio.worker  # noqa: F401

    import pipelex_pool.worker.entry  # noqa: F401
    import pipelex_pool.worker.run  # noqa: F401

    setproctitle.setproctitle(setproctitle.getproctitle())  # take over the argv area now, while environ is intact
    error = None
    if app is not None:
        from pipelex_pool.packs import load_app

        try:
            load_app(app)
        except Exception as exc:  # the user's code: whatever it raises is reported, never fatal here
            error = f"{type(exc).__name__}: {exc}"
    # An unversioned temporalio Worker identifies its code by a hash of the bytecode of every loaded module, made
    # once per process (memoized): ~0.13 CPU-s, most of a forked child's start. Made here, once, every child inherits
    # it (the code it hashes is what the children run; with preload, the application's too).
    try:
        from temporalio.worker._worker import load_default_build_id
    except ImportError:  # (another SDK version: each child makes its own, as an exec'd worker does)
        pass
    else:
        load_default_build_id()
    gc.freeze()  # children never scan (and so never write to) what is imported now: it stays shared
    return error


def receive(sock: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    fds = array.array("i")
    message, ancillary, _, _ = sock.recvmsg(MAX_REQUEST, socket.CMSG_SPACE(4 * fds.itemsize))
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    return (json.loads(message) if message else None), list(fds)


def run_child(request: dict[str, Any], output_fd: int) -> None:
    """In the double-forked child: become the worker process. Never returns."""
    code = 1
    try:
        if os.read(output_fd, 1) != GO:  # EOF: the supervisor does not know this child; never run beside its twin
            os._exit(EXIT_NOT_ADOPTED)
        os.setsid()
        stdin = os.open(os.devnull, os.O_RDONLY)
        os.dup2(stdin, 0)
        os.dup2(output_fd, 1)
        os.dup2(output_fd, 2)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # the control socket, the fds above
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # (ignored in the fork server)
        os.environ.clear()
        os.environ.update(request["env"])
        deadline = time.monotonic() + ADOPTION_TIMEOUT_S
        while os.getppid() != request["supervisor_pid"]:
            if time.monotonic() > deadline:
                print("pipelex-pool fork server: the supervisor did not adopt this process", file=sys.stderr)
                os._exit(EXIT_NOT_ADOPTED)
            time.sleep(0.001)
        set_parent_death_signal(signal.SIGTERM)  # armed while the supervisor is our parent ...
        if os.getppid() != request["supervisor_pid"]:  # ... and it did not die just before
            os._exit(EXIT_NOT_ADOPTED)
        sys.argv = ["pipelex-pool", *request["args"]]
        import setproctitle

        setproctitle.setproctitle(" ".join([*request["command"], *request["args"]]))  # what ps shows, as if exec'd
        from pipelex_pool.worker import entry

        command, *args = request["args"]
        if command != "worker":  # the fork server only makes built-in workers
            print(f"pipelex-pool fork server: cannot run {command!r}", file=sys.stderr)
            os._exit(EXIT_NOT_ADOPTED)
        entry.run(args)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def fork_child(request: dict[str, Any], output_fd: int) -> int:
    """Double-fork a child for `request`; returns its pid."""
    read_end, write_end = os.pipe()
    intermediate = os.fork()
    if intermediate == 0:
        try:
            os.close(read_end)
            child = os.fork()
            if child == 0:
                os.close(write_end)
                run_child(request, output_fd)
            os.write(write_end, str(child).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    data = b""
    while chunk := os.read(read_end, 64):
        data += chunk
    os.close(read_end)
    os.waitpid(intermediate, 0)
    if not data:
        raise RuntimeError("the intermediate process died before reporting the child's pid")
    return int(data)


def serve(sock: socket.socket, greeting: dict[str, Any]) -> None:
    try:
        sock.send(json.dumps({"ready": True, "pid": os.getpid(), **greeting}).encode())
    except (BrokenPipeError, ConnectionResetError):  # the supervisor is gone already (an `up` that refused)
        return
    while True:
        try:
            request, fds = receive(sock)
        except ConnectionResetError:  # the supervisor is gone (an `up` that refused to start): nothing to say
            return
        except (OSError, ValueError) as exc:
            print(f"pipelex-pool fork server: bad request: {exc}", file=sys.stderr)
            return
        if request is None:  # the supervisor closed its end: we are done
            return
        try:
            if len(fds) != 1:
                raise ValueError(f"expected one file descriptor with the request, got {len(fds)}")
            answer: dict[str, Any] = {"pid": fork_child(request, fds[0])}
        except Exception as exc:
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        finally:
            for fd in fds:
                os.close(fd)
        sock.send(json.dumps(answer).encode())


def main() -> None:
    if len(sys.argv) not in (2, 4) or not sys.argv[1].isdigit():
        sys.exit(
            "usage: python -u -m pipelex_pool.supervisor.spawning.fork_server FD [APP APP_PATH] "
            "(started by pipelex-pool up)"
        )
    set_parent_death_signal(signal.SIGKILL)
    if os.getppid() == 1:  # the supervisor died before the signal was armed
        sys.exit(1)
    import_structlog_without_rich()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor stops us by closing the socket
    sock = socket.socket(fileno=int(sys.argv[1]))
    from pipelex_pool.packs import AppRef  # (temporalio: imported once the parent-death signal is armed)

    app = AppRef(sys.argv[2], Path(sys.argv[3]) if sys.argv[3] else None) if len(sys.argv) == 4 else None
    error = preload(app)
    serve(sock, {"preloaded": app.spec if app and error is None else None, "preload_error": error})


if __name__ == "__main__":
    main()

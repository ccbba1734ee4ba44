"""The control server: a Unix stream socket (0600 in a 0700 directory), peers checked with SO_PEERCRED."""

from __future__ import annotations

import errno
import os
import socket
import struct
from pathlib import Path
from typing import Any

import anyio
import structlog
from anyio.abc import SocketAttribute, SocketListener, SocketStream, TaskStatus
from anyio.streams.buffered import BufferedByteReceiveStream

from pipelex_pool.control import feed, protocol
from pipelex_pool.control.commands import COMMANDS
from pipelex_pool.errors import ErrorCode, ProtocolError, RequestRefused
from pipelex_pool.supervisor.fault import FAULTS
from pipelex_pool.supervisor.view import PoolControl

log = structlog.get_logger("pipelex_pool.control")
RESOURCE_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
ACCEPT_RETRY_FIRST_S = 0.05
ACCEPT_RETRY_MAX_S = 1.0
IDLE_TIMEOUT_S = 30.0  # a client silent (or stuck mid-line) this long is disconnected
SUBSCRIBE = "subscribe"  # the one streaming command (`pipelex-pool top`)
WRITE_TIMEOUT_S = 10.0  # a client that does not read its answer this long is disconnected


def peer_uid(stream: SocketStream) -> int:
    raw: socket.socket = stream.extra(SocketAttribute.raw_socket)
    creds = raw.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)


class ControlServer:
    def __init__(self, supervisor: PoolControl, path: Path) -> None:
        self.supervisor = supervisor
        self.path = path

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self.path.unlink(missing_ok=True)  # a stale socket of a crashed supervisor (we hold the pool's lock)
        listener = await anyio.create_unix_listener(self.path, mode=0o600)
        log.info("control.listening", socket=str(self.path))
        task_status.started()
        try:
            async with listener, anyio.create_task_group() as tg:
                while True:
                    tg.start_soon(self._connection, await self._accept(listener))
        finally:
            self.path.unlink(missing_ok=True)

    async def _accept(self, listener: SocketListener) -> SocketStream:
        """The next client. Out of file descriptors (or memory) is a moment to wait out, never the end of the
        server: the pending client waits in the backlog until a descriptor is free."""
        delay = ACCEPT_RETRY_FIRST_S
        while True:
            try:
                return await listener.accept()
            except anyio.BrokenResourceError as exc:  # (anyio's wrapping of the accept's OSError)
                cause = exc.__cause__
                if not isinstance(cause, OSError) or cause.errno not in RESOURCE_ERRNOS:
                    raise
                if delay == ACCEPT_RETRY_FIRST_S:
                    FAULTS["control.accept"] += 1
                    log.warning("control.accept_failed", error=os.strerror(cause.errno or 0), action="retrying")
                await anyio.sleep(delay)
                delay = min(delay * 2, ACCEPT_RETRY_MAX_S)

    async def _send(self, stream: SocketStream, frame: bytes) -> bool:
        try:
            with anyio.fail_after(WRITE_TIMEOUT_S):
                await stream.send(frame)
            return True
        except (TimeoutError, anyio.BrokenResourceError, anyio.ClosedResourceError):
            return False

    async def _connection(self, stream: SocketStream) -> None:
        """One client. Nothing a client does may take the daemon down: errors end this connection only."""
        try:
            await self._serve_client(stream)
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            log.info("control.client_gone", error=str(exc))
        except Exception:  # a bug met by one client's input: logged and counted, the server goes on
            FAULTS["control.connection"] += 1
            log.exception("control.connection_failed")

    async def _serve_client(self, stream: SocketStream) -> None:
        async with stream:
            uid = peer_uid(stream)
            if uid not in (os.getuid(), 0):
                log.warning("control.refused", uid=uid)
                await self._send(
                    stream, protocol.error(None, ErrorCode.FORBIDDEN, f"uid {uid} may not control this pool")
                )
                return
            buffered = BufferedByteReceiveStream(stream)
            while True:
                try:
                    with anyio.fail_after(IDLE_TIMEOUT_S):
                        line = await buffered.receive_until(b"\n", protocol.MAX_FRAME)
                except TimeoutError:
                    await self._send(
                        stream, protocol.error(None, ErrorCode.TIMEOUT, f"no complete request in {IDLE_TIMEOUT_S:g}s")
                    )
                    return
                except anyio.DelimiterNotFound:
                    await self._send(
                        stream,
                        protocol.error(
                            None, ErrorCode.FRAME_TOO_LARGE, f"a frame is at most {protocol.MAX_FRAME} bytes"
                        ),
                    )
                    return
                except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError, anyio.ClosedResourceError):
                    return
                if not await self._answer(stream, line):
                    return

    async def _subscribe(self, stream: SocketStream, request_id: Any, args: dict[str, Any]) -> None:
        """`subscribe`: status frames when the pool changes and event frames as they happen (control/feed.py).
        Arguments: `events` (default true; `--wait` follows the status alone), `every` (seconds between looks at
        the status, default 1, at least feed.FASTEST_CHECK_S)."""
        lock = anyio.Lock()

        async def send(frame: dict[str, Any]) -> bool:
            async with lock:
                return await self._send(stream, protocol.encode({"id": request_id, "ok": True, **frame}))

        every = args.get("every", feed.CHECK_EVERY_S)
        if isinstance(every, bool) or not isinstance(every, int | float) or every <= 0:
            every = feed.CHECK_EVERY_S
        events = args.get("events", True) is not False
        log.info("control.subscribed", events=events, every_s=every)
        await feed.stream(self.supervisor, send, events=events, check_every=max(float(every), feed.FASTEST_CHECK_S))

    async def _answer(self, stream: SocketStream, line: bytes) -> bool:
        """Answer one frame; False when the connection must close (malformed input)."""
        try:
            request = protocol.decode_request(line)
        except ProtocolError as exc:
            await self._send(stream, protocol.error(None, ErrorCode.MALFORMED, str(exc)))
            return False
        if request.cmd == SUBSCRIBE:  # a stream, not an answer: this connection carries it until the client leaves
            await self._subscribe(stream, request.id, request.args)
            return False
        command = COMMANDS.get(request.cmd)
        if command is None:
            known = ", ".join(sorted(COMMANDS))
            return await self._send(
                stream,
                protocol.error(
                    request.id, ErrorCode.UNKNOWN_COMMAND, f"unknown command {request.cmd!r} (known: {known})"
                ),
            )
        try:
            command.check_arguments(request.args)
            result = await command.run(self.supervisor, request.args)
        except RequestRefused as exc:
            return await self._send(stream, protocol.error(request.id, exc.code, exc.message))
        except Exception as exc:  # a bug in a command must cost one request, not the daemon: log it, answer
            log.exception("control.command_crashed", cmd=request.cmd)
            return await self._send(
                stream, protocol.error(request.id, ErrorCode.INTERNAL_ERROR, f"{request.cmd}: {exc!r}")
            )
        if command.mutating:
            log.info("control.command", cmd=request.cmd, args=request.args)
        return await self._send(stream, protocol.ok(request.id, result))

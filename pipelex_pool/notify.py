"""The sd_notify datagram protocol, client side: used by the worker (to its supervisor) and by the supervisor
(to systemd). A NOTIFY_SOCKET starting with '@' names an abstract socket."""

from __future__ import annotations

import os
import socket

from pipelex_pool.contract import NOTIFY_SOCKET_ENV


class Notifier:
    """Sends `KEY=VALUE` datagrams to $NOTIFY_SOCKET; does nothing when it is not set."""

    def __init__(self, address: str | None = None) -> None:
        address = address if address is not None else os.environ.get(NOTIFY_SOCKET_ENV)
        self.address: str | None = None
        if address:
            self.address = "\0" + address[1:] if address.startswith("@") else address
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """Send one datagram without ever blocking; False when no socket is set, the receiver is gone, or its queue
        is full (a paused supervisor): the caller decides whether to try again later. Never raises."""
        if self.address is None:
            return False
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK)
        try:
            self._sock.sendto("\n".join(lines).encode(), self.address)
        except OSError:
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

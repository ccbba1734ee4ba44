"""The supervisor's events as they are logged, copied to live subscribers (`top`'s stream, the notifications):
a structlog processor that never blocks (a full subscriber's queue drops events; the log file keeps them)."""

from __future__ import annotations

import json
import threading
from typing import Any

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

EVENT_QUEUE = 500


class EventFeed:
    """A structlog processor that copies each supervisor event to the live subscribers (event loop thread only:
    an event logged from another thread is not fed, the log file still has it)."""

    def __init__(self) -> None:
        self._subscribers: set[MemoryObjectSendStream[dict[str, Any]]] = set()
        self._loop_thread: threading.Thread | None = None
        self.dropped = 0

    def subscribe(self) -> MemoryObjectReceiveStream[dict[str, Any]]:
        self._loop_thread = threading.current_thread()
        send, receive = anyio.create_memory_object_stream[dict[str, Any]](max_buffer_size=EVENT_QUEUE)
        self._subscribers.add(send)
        return receive

    def unsubscribe(self, receive: MemoryObjectReceiveStream[dict[str, Any]]) -> None:
        receive.close()  # its send side is dropped at the next event

    def __call__(self, logger: Any, name: str, event_dict: structlog.typing.EventDict) -> structlog.typing.EventDict:
        if self._subscribers and threading.current_thread() is self._loop_thread:
            event = json.loads(json.dumps(event_dict, default=str))
            for send in list(self._subscribers):
                try:
                    send.send_nowait(event)
                except anyio.WouldBlock:
                    self.dropped += 1
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    self._subscribers.discard(send)
        return event_dict


FEED = EventFeed()

"""A replica's sd_notify datagram, parsed, and whether it only reports (noted for the loop's next iteration,
Inbox.note) or may change what the loop does (sent at once)."""

from __future__ import annotations

from pipelex_pool.contract import INFLIGHT_KEY, RUNS_KEY, TASKS_KEY
from pipelex_pool.supervisor.events import Notified
from pipelex_pool.supervisor.process.handle import ProcessHandle

MAX_DATAGRAM = 64 * 1024  # a worker's datagrams are at most 32 KiB (worker/inflight.py)
# what a datagram of these fields only says is noted (Inbox.note): a ping, and reports that change nothing the
# loop decides (its task counts, in-flight attempts, cached runs): they need not wake the loop one by one
NOTED = frozenset({"WATCHDOG", TASKS_KEY, INFLIGHT_KEY, RUNS_KEY})


def parse_notify(datagram: bytes) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in datagram.decode(errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            fields[key.strip()] = value
    return fields


def routed(datagram: bytes, handle: ProcessHandle, generation: int) -> tuple[Notified, bool]:
    """The datagram as the loop's event, and whether it is only noted."""
    fields = parse_notify(datagram)
    return Notified(handle, generation, fields), fields.keys() <= NOTED and fields.get("WATCHDOG", "1") == "1"

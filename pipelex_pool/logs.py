"""structlog set-up: a console renderer on a TTY (coloured unless $NO_COLOR), JSON lines otherwise (log files,
journald); on journald's own stream ($JOURNAL_STREAM) each line starts with its syslog priority, so that
`journalctl -p warning` finds the warnings. The supervisor also keeps its events as JSON lines in a size-rotated
file (EVENT_FILE, opened once its log directory is known), which `pipelex-pool events` reads."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

import structlog

from pipelex_pool.supervisor.spawning.logfile import RotatingLog

PRIORITIES = {"critical": 2, "exception": 3, "error": 3, "warning": 4, "warn": 4, "info": 6, "debug": 7}


def on_journal(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Whether `stream` is the journal stream systemd connected ($JOURNAL_STREAM is its "device:inode"; a child
    whose stderr was redirected inherits the variable but not the stream)."""
    device, _, inode = (os.environ if environ is None else environ).get("JOURNAL_STREAM", "").partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        info = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return (info.st_dev, info.st_ino) == (int(device), int(inode))


class PriorityPrefixed:
    """sd-daemon's "<N>" prefix before each rendered line: journald takes it as the entry's priority."""

    def __init__(self, renderer: structlog.typing.Processor) -> None:
        self.renderer = renderer

    def __call__(self, logger: Any, name: str, event_dict: structlog.typing.EventDict) -> str:
        priority = PRIORITIES.get(str(event_dict.get("level", "info")), 6)
        rendered = self.renderer(logger, name, event_dict)
        return f"<{priority}>" + (rendered.decode() if isinstance(rendered, bytes) else str(rendered))


class SafeStream:
    """A log stream that never raises: when the reader is gone (the supervisor died, the pipe broke), a log line
    must not turn a graceful drain into a crash."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except (OSError, ValueError):
            return 0

    def flush(self) -> None:
        try:
            self.stream.flush()
        except (OSError, ValueError):
            pass


class EventFile:
    """A structlog processor that appends each event as a JSON line to a rotated file, and passes it on. Events
    logged before the file is opened are kept (up to a limit) and written first."""

    KEPT_BEFORE_OPEN = 1000

    def __init__(self) -> None:
        self.log: RotatingLog | None = None
        self.early: list[bytes] = []

    def open(self, path: Path, max_bytes: int, backups: int) -> None:
        self.log = RotatingLog(path, max_bytes, backups)
        for line in self.early:
            self.log.write(line)
        self.early.clear()

    def close(self) -> None:
        if self.log is not None:
            self.log.close()
            self.log = None

    def __call__(self, logger: Any, name: str, event_dict: structlog.typing.EventDict) -> structlog.typing.EventDict:
        line = (json.dumps(event_dict, default=str) + "\n").encode()
        if self.log is None:
            if len(self.early) < self.KEPT_BEFORE_OPEN:
                self.early.append(line)
            return event_dict
        try:
            self.log.write(line)
        except OSError:  # a full disk costs the file its events, never the supervisor its life
            pass
        return event_dict


EVENT_FILE = EventFile()


def configure_logging(
    *,
    json_lines: bool | None = None,
    level: int = logging.INFO,
    events: EventFile | None = None,
    feeds: tuple[structlog.typing.Processor, ...] = (),
    **context: object,
) -> None:
    """Configure structlog once per process; `context` is bound to every event (e.g. the worker identity);
    `feeds` see each event after the event file (the live feed of `pipelex-pool top`)."""
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer()
        if json_lines
        else structlog.dev.ConsoleRenderer(colors=not os.environ.get("NO_COLOR"))
    )
    if json_lines and on_journal(sys.stderr):
        renderer = PriorityPrefixed(renderer)
    if json_lines or events is not None:
        processors.append(structlog.processors.format_exc_info)
    if events is not None:
        processors.append(events)
    processors.extend(feeds)
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=SafeStream(sys.stderr)),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    if context:
        structlog.contextvars.bind_contextvars(**context)

"""structlog set-up: a console renderer on a TTY, JSON lines otherwise (journald, log files)."""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog


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


def configure_logging(*, json_lines: bool | None = None, level: int = logging.INFO, **context: object) -> None:
    """Configure structlog once per process; `context` is bound to every event (e.g. the worker identity)."""
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    processors: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json_lines else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*processors, structlog.processors.format_exc_info, renderer]
        if json_lines
        else [*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=SafeStream(sys.stderr)),  # type: ignore[arg-type]
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.clear_contextvars()
    if context:
        structlog.contextvars.bind_contextvars(**context)

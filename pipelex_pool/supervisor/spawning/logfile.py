"""A replica's output file, rotated by size: <log_dir>/<group>-<replica>.log, .log.1, ... .log.N (each opened
with open_private_file: 0600, never through a link).

Writing it never stops supervision: a full disk, a log directory an operator removed (a rotation then finds no file
to rename), a file that cannot be opened any more: the output is dropped meanwhile (the child's pipe is still read,
so the child never blocks on it), the failure is logged once and counted, and the file is opened again at the next
write (recreated, with its directory, if it was removed)."""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import structlog

from pipelex_pool.errors import PoolError
from pipelex_pool.paths import open_private_file
from pipelex_pool.supervisor.fault import FAULTS

log = structlog.get_logger("pipelex_pool.supervisor")


class RotatingLog:
    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._file: BinaryIO | None = open_private_file(path)
        self._size = self._file.tell()
        self.failing: str | None = None  # why the last write failed (None: writing)
        self.dropped = 0  # bytes of output dropped while failing

    def write(self, data: bytes) -> None:
        try:
            if self._file is None:
                self._file = open_private_file(self.path)
                self._size = self._file.tell()
            if self.max_bytes and self._size + len(data) > self.max_bytes and self._size > 0:
                self._rotate()
            assert self._file is not None
            self._file.write(data)
            self._file.flush()
            self._size += len(data)
        except (OSError, PoolError) as exc:
            self._failed(exc, len(data))
            return
        if self.failing is not None:
            log.info("worker.log_writing_again", path=str(self.path), dropped_bytes=self.dropped)
            self.failing, self.dropped = None, 0

    def _failed(self, exc: Exception, size: int) -> None:
        self.dropped += size
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass  # (what could not be flushed is dropped with the rest)
            self._file = None
        why = str(exc)
        if why != self.failing:
            FAULTS["worker_log"] += 1
            log.warning("worker.log_write_failed", path=str(self.path), error=why,
                        effect="the replica's output is dropped until the file can be written again")  # fmt: skip
            self.failing = why

    def _rotate(self) -> None:
        assert self._file is not None
        self._file.close()
        self._file = None
        if self.backups > 0:
            for n in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{n}")
                if older.exists():
                    older.replace(self.path.with_name(f"{self.path.name}.{n + 1}"))
            if self.path.exists():  # (an operator may have removed it: then there is nothing to keep)
                self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self._file = open_private_file(self.path, truncate=True)  # no backups: truncate
        self._size = 0

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None

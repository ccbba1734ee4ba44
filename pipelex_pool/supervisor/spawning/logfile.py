"""A replica's output file, rotated by size: <log_dir>/<group>-<replica>.log, .log.1, ... .log.N (each opened
with open_private_file: 0600, never through a link)."""

from __future__ import annotations

from pathlib import Path

from pipelex_pool.paths import open_private_file


class RotatingLog:
    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._file = open_private_file(path)
        self._size = self._file.tell()

    def write(self, data: bytes) -> None:
        if self.max_bytes and self._size + len(data) > self.max_bytes and self._size > 0:
            self._rotate()
        self._file.write(data)
        self._file.flush()
        self._size += len(data)

    def _rotate(self) -> None:
        self._file.close()
        if self.backups > 0:
            for n in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{n}")
                if older.exists():
                    older.replace(self.path.with_name(f"{self.path.name}.{n + 1}"))
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
            self._file = open_private_file(self.path, truncate=True)
        else:
            self._file = open_private_file(self.path, truncate=True)  # no backups: truncate
        self._size = 0

    def close(self) -> None:
        self._file.close()

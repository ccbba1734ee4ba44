"""Reading replica log files: the last lines, and following a file across rotations."""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path


def tail_lines(path: Path, count: int) -> list[str]:
    with path.open("rb") as file:
        return [line.decode(errors="replace").rstrip("\n") for line in deque(file, maxlen=count)] if count > 0 else []


def follow_file(path: Path, interval: float = 0.2) -> Iterator[str]:
    """Yield what is appended to `path`; reopen it when it is rotated (its inode changes) or truncated."""
    file = path.open("rb")
    file.seek(0, os.SEEK_END)
    inode = os.fstat(file.fileno()).st_ino
    try:
        while True:
            chunk = file.read()
            if chunk:
                yield chunk.decode(errors="replace")
                continue
            try:
                current = path.stat()
            except FileNotFoundError:
                time.sleep(interval)
                continue
            if current.st_ino != inode or current.st_size < file.tell():
                file.close()
                file = path.open("rb")
                inode = os.fstat(file.fileno()).st_ino
                continue
            time.sleep(interval)
    finally:
        file.close()

"""Reading log files: the last lines, and following one or many files across rotations."""

from __future__ import annotations

import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

REPLICA_LOG = re.compile(r"^(?P<group>.+)-(?P<replica>\d+)\.log$")  # <group>-<N>.log, rotated ones end in .log.N


def tail_lines(path: Path, count: int) -> list[str]:
    with path.open("rb") as file:
        return [line.decode(errors="replace").rstrip("\n") for line in deque(file, maxlen=count)] if count > 0 else []


class Follower:
    """What is appended to one file from now on; reopens it when it is rotated (its inode changes) or truncated,
    and keeps an unfinished last line until its end arrives."""

    def __init__(self, path: Path, from_start: bool = False) -> None:
        self.path = path
        self.file = path.open("rb")
        if not from_start:
            self.file.seek(0, os.SEEK_END)
        self.inode = os.fstat(self.file.fileno()).st_ino
        self.partial = b""

    def read(self) -> bytes:
        """What was appended since the last call (b"" if nothing)."""
        chunk = self.file.read()
        if chunk:
            return chunk
        try:
            current = self.path.stat()
        except FileNotFoundError:
            return b""
        if current.st_ino != self.inode or current.st_size < self.file.tell():
            self.file.close()
            self.file = self.path.open("rb")
            self.inode = os.fstat(self.file.fileno()).st_ino
            return self.file.read()
        return b""

    def lines(self) -> list[str]:
        data = self.partial + self.read()
        *complete, self.partial = data.split(b"\n")
        return [line.decode(errors="replace") for line in complete]

    def close(self) -> None:
        self.file.close()


def follow_file(path: Path, interval: float = 0.2) -> Iterator[str]:
    """Yield what is appended to `path`, across rotations."""
    follower = Follower(path)
    try:
        while True:
            chunk = follower.read()
            if chunk:
                yield chunk.decode(errors="replace")
            else:
                time.sleep(interval)
    finally:
        follower.close()


def replica_logs(log_dir: Path, groups: list[str]) -> dict[str, Path]:
    """Every replica log file of `groups` in `log_dir`, by replica name ("llm/0"), in group then replica order."""
    found = []
    for path in log_dir.glob("*.log"):
        match = REPLICA_LOG.match(path.name)
        if match and match["group"] in groups:
            found.append((groups.index(match["group"]), int(match["replica"]), f"{match['group']}/{match['replica']}"))
    return {name: log_dir / f"{name.replace('/', '-')}.log" for _, _, name in sorted(found)}


def follow_many(
    find: Callable[[], dict[str, Path]], interval: float = 0.2, rescan_every: float = 1.0
) -> Iterator[tuple[str, str]]:
    """Yield (name, line) for every line appended to any file `find` returns; files that appear later (a replica
    added by `scale`) are followed from their start."""
    followers = {name: Follower(path) for name, path in find().items()}
    rescanned = time.monotonic()
    try:
        while True:
            quiet = True
            for name, follower in list(followers.items()):
                for line in follower.lines():
                    quiet = False
                    yield name, line
            if time.monotonic() - rescanned > rescan_every:
                rescanned = time.monotonic()
                for name, path in find().items():
                    if name not in followers:
                        followers[name] = Follower(path, from_start=True)
            if quiet:
                time.sleep(interval)
    finally:
        for follower in followers.values():
            follower.close()

"""Reading a TOML file with errors that name the line and the key: stdlib only, so that the CLI's control
commands (which only need the pool's name and socket) stay light."""

from __future__ import annotations

import re
import stat
import tomllib
from pathlib import Path
from typing import Any

from pipelex_pool.errors import Issue, TopologyError


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file to plain Python values; raises TopologyError naming the line (and the key) of a syntax
    error, a duplicated key included, and refusing anything but a regular file (a FIFO would block the reader)."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise TopologyError(
                str(path),
                [Issue("", "is not a regular file (a directory, FIFO or device).", "point at a TOML file.")],
            )
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise TopologyError(str(path), [Issue("", "file not found.", "check the path.")]) from exc
    except UnicodeDecodeError as exc:
        raise TopologyError(str(path), [Issue("", f"is not UTF-8 text: {exc}.", "save it as UTF-8.")]) from exc
    except OSError as exc:
        raise TopologyError(str(path), [Issue("", f"cannot read the file: {exc}.", "check its permissions.")]) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TopologyError(str(path), [toml_syntax_issue(text, str(exc))]) from exc
    except RecursionError as exc:
        raise TopologyError(str(path), [too_deep()]) from exc
    if depth(data) > MAX_DEPTH:
        raise TopologyError(str(path), [too_deep()])
    return data


MAX_DEPTH = 32  # tables and arrays within each other: a topology needs 6


def too_deep() -> Issue:
    return Issue("", f"tables and arrays are nested more than {MAX_DEPTH} levels deep.", "flatten the file.")


def depth(value: Any) -> int:
    """How deeply tables and arrays nest in `value` (iteratively: a deep value cannot exhaust the stack)."""
    deepest, pending = 0, [(value, 0)]
    while pending:
        node, level = pending.pop()
        deepest = max(deepest, level)
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        pending.extend((child, level + 1) for child in children)
    return deepest


_TOML_POSITION = re.compile(r"\(at line (\d+), column (\d+)\)")
_TOML_HEADER = re.compile(r"^\s*\[\[?\s*([^\]]+?)\s*\]\]?")
_TOML_KEY = re.compile(r"^\s*([A-Za-z0-9_.\-\"' ]+?)\s*=")


def toml_syntax_issue(text: str, message: str) -> Issue:
    """An Issue for a TOML parse error: its line and column, and the key path where that line has one."""
    match = _TOML_POSITION.search(message)
    problem = _TOML_POSITION.sub("", message).strip()
    if match is None:
        return Issue("", f"TOML syntax error: {problem}.", "fix the syntax.")
    line = int(match.group(1))
    lines = text.splitlines()
    where = f"line {line}, column {match.group(2)}"
    key = _TOML_KEY.match(lines[line - 1]) if 0 < line <= len(lines) else None
    if key is not None:
        table = next((h.group(1) for h in map(_TOML_HEADER.match, reversed(lines[: line - 1])) if h), "")
        dotted = ".".join(p for p in (table, key.group(1).strip().strip("\"'")) if p)
        where = f"{dotted} ({where})"
    fix = "remove one of the two." if "overwrite" in problem or "redefine" in problem else "fix the syntax."
    if "overwrite" in problem:
        problem = "the key is given twice (TOML allows each key once)"
    return Issue(where, f"TOML syntax error: {problem}.", fix)

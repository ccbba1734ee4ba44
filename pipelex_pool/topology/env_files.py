"""`[workers.G] env_file`: dotenv files whose variables the group's replicas get (read here, with I/O).

The files are parsed by python-dotenv (the syntax's reference library), without its own interpolation: a value's
`${VAR}` is expanded from the environment `up` (or `reload`) runs in, as everywhere else in the topology
(env_refs.py). The group's `env` table wins over its files; a later file wins over an earlier one."""

from __future__ import annotations

import io
from collections.abc import Mapping
from pathlib import Path

from pipelex_pool.errors import Issue
from pipelex_pool.topology.env_refs import expand_env


def read_env_files(
    group: str, files: list[str], base: Path, environ: Mapping[str, str], issues: list[Issue]
) -> tuple[list[str], dict[str, str]]:
    """The files' absolute paths and their variables, merged in order; each problem is an Issue naming the file."""
    paths: list[str] = []
    values: dict[str, str] = {}
    for index, name in enumerate(files):
        where = f"workers.{group}.env_file[{index}]"
        path = (base / name).expanduser()
        paths.append(str(path))
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            issues.append(
                Issue(where, f"cannot read {path}: {reason}.", "create it, or fix the path (relative to the topology)")
            )
            continue
        from dotenv import dotenv_values  # (loaded only for a topology with env files)

        parsed = dotenv_values(stream=io.StringIO(text), interpolate=False)
        for key, raw in parsed.items():
            if raw is None:
                issues.append(
                    Issue(where, f"{path}: {key!r} has no value.", f"write {key}=VALUE (or {key}= for an empty one)")
                )
                continue
            value, missing = expand_env(raw, environ)
            if missing:
                issues.append(
                    Issue(
                        where,
                        f"{path}: {key} refers to ${{{missing[0]}}}, which is not set.",
                        f"export {missing[0]} where the pool runs, or write ${{{missing[0]}:-default}}",
                    )
                )
                continue
            values[key] = value
    return paths, values

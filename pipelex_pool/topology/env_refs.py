"""`${VAR}` references in a topology's string values, expanded from the environment before the file is validated.

`${VAR}` takes the variable, `${VAR:-default}` a default when it is unset or empty, and `$$` is a literal `$`.
Every string value of the file is expanded (build_id, paths, addresses, commands, env), so a value's pattern is
checked on what the pool will use. An unset variable is an error naming the key, except inside a Temporal server
entry that the file does not select: Pipelex's own pipelex.toml lists servers (`testing`, ...) whose variables only
the machines that use them define.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pipelex_pool.errors import Issue

_ENV_REF = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
SERVERS_PATH = ("temporal", "temporal_config", "temporal_server_configs")


def expand_env(value: str, environ: Mapping[str, str]) -> tuple[str, list[str]]:
    """Expand ${VAR} and ${VAR:-default} ($$ is a literal $); returns the text and the unset names."""
    missing: list[str] = []

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, default = match.group(1), match.group(2)
        if name in environ and (environ[name] or default is None):
            return environ[name]
        if default is not None:
            return default
        missing.append(name)
        return ""

    return _ENV_REF.sub(replace, value), missing


def _key_path(path: tuple[str | int, ...]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _selected_server(temporal: Any) -> str:
    config = temporal.get("temporal_config") if isinstance(temporal, Mapping) else None
    selected = config.get("selected_server") if isinstance(config, Mapping) else None
    return selected if isinstance(selected, str) else "local"


def expand_document(
    doc: Any,
    environ: Mapping[str, str],
    issues: list[Issue],
    *,
    root: tuple[str, ...] = (),
    file: str | None = None,
) -> Any:
    """`doc` with every string value expanded (a new structure; `doc` is left as it was). Unset variables are
    reported in `issues`, with the key path under `root` (("temporal",) for a referenced pipelex.toml's table)."""
    temporal = doc if root == ("temporal",) else doc.get("temporal") if isinstance(doc, Mapping) else None
    selected = _selected_server(temporal)

    def unused_server(full: tuple[str | int, ...]) -> bool:
        depth = len(SERVERS_PATH)
        return len(full) > depth and full[:depth] == SERVERS_PATH and full[depth] != selected

    def walk(node: Any, path: tuple[str | int, ...]) -> Any:
        if isinstance(node, str):
            text, missing = expand_env(node, environ)
            full = (*root, *path)
            if missing and unused_server(full):
                return node  # an entry this file does not use: its variables belong to other machines
            for name in missing:
                issues.append(
                    Issue(
                        _key_path(full),
                        f"references ${{{name}}}, which is not set in the environment.",
                        f"export {name}, give a default (${{{name}:-value}}), or write $$ for a literal $.",
                        file=file,
                    )
                )
            return text
        if isinstance(node, Mapping):
            return {key: walk(value, (*path, key)) for key, value in node.items()}
        if isinstance(node, list):
            return [walk(value, (*path, index)) for index, value in enumerate(node)]
        return node

    return walk(doc, ())


def escape_refs(doc: Any) -> Any:
    """`doc` with every `$` written `$$`: an expanded document stays as it is when expanded again."""
    if isinstance(doc, str):
        return doc.replace("$", "$$")
    if isinstance(doc, Mapping):
        return {key: escape_refs(value) for key, value in doc.items()}
    if isinstance(doc, list):
        return [escape_refs(value) for value in doc]
    return doc

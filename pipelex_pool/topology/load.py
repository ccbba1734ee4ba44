"""Read a topology file, resolve its references and defaults, and validate it as a whole.

Each section is parsed on its own so that one broken section does not hide the errors of the others: every
error of the file is reported in one run.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from pipelex_pool.contract import GROUP_NAME_PATTERN
from pipelex_pool.errors import Issue, Severity, TopologyError
from pipelex_pool.packs import AppImportError, AppRef, Catalog, ResolvedScope, load_app
from pipelex_pool.temporal.connection import Connection
from pipelex_pool.topology.env_files import read_env_files
from pipelex_pool.topology.env_refs import expand_document
from pipelex_pool.topology.errors_from_pydantic import issues_from_validation
from pipelex_pool.topology.schema import (
    RESERVED_GROUP_NAMES,
    DevServer,
    PoolSection,
    ResolvedGroup,
    WorkerGroup,
)
from pipelex_pool.topology.suggest import did_you_mean
from pipelex_pool.topology.temporal_schema import TemporalSection
from pipelex_pool.topology.toml import read_toml
from pipelex_pool.topology.validate import check_topology
from pipelex_pool.topology.validate_connection import check_connection

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Topology:
    """A validated topology: what `up` runs and `validate` summarises."""

    file: Path
    pool: PoolSection
    dev_server: DevServer
    temporal: TemporalSection
    groups: dict[str, ResolvedGroup]
    catalog: Catalog
    scopes: dict[str, ResolvedScope]
    issues: list[Issue] = field(default_factory=list)  # warnings and notes (errors raise instead)
    # the file as validated: `${VAR}` expanded, the referenced pipelex.toml's [temporal] inlined, app_path absolute;
    # workers read a copy of it (topology/snapshot.py), so a file broken on disk after `up` never reaches them
    document: dict[str, Any] = field(default_factory=dict)
    validated_file: Path | None = None  # where that copy was written, once the supervisor has written it
    connection: Connection = field(default_factory=Connection)  # where and how every connection goes

    @property
    def config_for_workers(self) -> Path:
        return self.validated_file or self.file

    @property
    def app(self) -> AppRef:
        return app_ref(self.pool, self.file)

    @property
    def preload(self) -> AppRef | None:
        """The task packs the fork server imports before forking, if `[pool] preload` is on."""
        return self.app if self.pool.preload else None

    @property
    def warnings(self) -> list[Issue]:
        return [issue for issue in self.issues if issue.severity is Severity.WARNING]


def app_ref(pool: PoolSection, file: Path) -> AppRef:
    """`[pool] app`, found first in `[pool] app_path` (relative to the file) or else in the file's directory."""
    base = file.resolve().parent
    return AppRef(pool.app, (base / pool.app_path).resolve() if pool.app_path else base)


def salvage(model: type[M], data: Any) -> tuple[M | None, set[str]]:
    """`data` parsed without its top-level keys that fail (already reported), and those keys; None if it still
    fails."""
    if not isinstance(data, dict):
        return None, set()
    try:
        model.model_validate(data)
    except ValidationError as exc:
        dropped = {str(error["loc"][0]) for error in exc.errors() if error["loc"]}
    else:
        return None, set()
    try:
        return model.model_validate({k: v for k, v in data.items() if k not in dropped}), dropped
    except ValidationError:
        return None, dropped


def parse_section(
    model: type[M], data: Any, prefix: tuple[str, ...], issues: list[Issue], file: str | None = None
) -> M | None:
    try:
        return model.model_validate(data if data is not None else {})
    except ValidationError as exc:
        issues.extend(issues_from_validation(exc, model, prefix, file))
        return None


def temporal_table(
    doc: dict[str, Any], path: Path, issues: list[Issue], environ: Mapping[str, str]
) -> tuple[Any, str | None]:
    """The [temporal] table, inline or from `[pool] temporal_config_file` (its `${VAR}` expanded), and the file
    it came from. `doc` is the topology, already expanded."""
    pool = doc.get("pool") if isinstance(doc.get("pool"), dict) else {}
    reference = pool.get("temporal_config_file") if isinstance(pool, dict) else None
    if not isinstance(reference, str):
        return doc.get("temporal"), None
    if "temporal" in doc:
        issues.append(
            Issue(
                "pool.temporal_config_file",
                "the file has an inline [temporal] section and also references a temporal_config_file.",
                "keep one of them.",
            )
        )
        return doc.get("temporal"), None
    referenced = (path.parent / reference).resolve()
    try:
        data = read_toml(referenced)
    except TopologyError as exc:
        problem = exc.issues[0].problem if exc.issues else "cannot be read."
        issues.append(
            Issue(
                "pool.temporal_config_file",
                f"{reference!r} ({referenced}): {problem}",
                "fix the path or the file.",
            )
        )
        return None, None
    if "temporal" not in data:
        issues.append(
            Issue(
                "pool.temporal_config_file",
                f"{reference!r} has no [temporal] section.",
                "point it at a pipelex.toml.",
            )
        )
        return None, None
    return expand_document(data["temporal"], environ, issues, root=("temporal",), file=str(referenced)), str(referenced)


def move_docs_alias(temporal: Any, issues: list[Issue], file: str | None) -> None:
    """Pipelex's docs write [temporal.activity_queues.*]; its code reads [temporal.worker_config.activity_queues.*]."""
    if not isinstance(temporal, dict) or "activity_queues" not in temporal:
        return
    worker_config = temporal.setdefault("worker_config", {})
    if isinstance(worker_config, dict) and "activity_queues" not in worker_config:
        worker_config["activity_queues"] = temporal.pop("activity_queues")
        issues.append(
            Issue(
                "temporal.activity_queues",
                "this is the form of Pipelex's docs; Pipelex's code reads temporal.worker_config.activity_queues.",
                "move the tables under [temporal.worker_config.activity_queues.<activity>].",
                Severity.WARNING,
                file,
            )
        )


def group_name_issue(name: str) -> Issue:
    fixed = re.sub(r"[^A-Za-z0-9_-]", "_", name) or "group"
    if name in RESERVED_GROUP_NAMES:
        return Issue(f"workers.{name}", f"{name!r} is the embedded dev server's name.", "rename the table.")
    return Issue(
        f"workers.{name}",
        f"group name {name!r} may only hold letters, digits, '_' and '-' (it names log files, sockets and "
        "Temporal identities).",
        f"rename the table, e.g. [workers.{fixed}].",
    )


def _fallback_pool(raw: Any) -> PoolSection:
    app = raw.get("app") if isinstance(raw, dict) else None
    try:
        return PoolSection(app=app) if isinstance(app, str) else PoolSection()
    except ValidationError:
        return PoolSection()


def load_topology(
    path: str | Path, environ: Mapping[str, str] | None = None, *, read_connection_files: bool = True
) -> Topology:
    """Read and validate a topology file. Raises TopologyError listing every error found.
    `read_connection_files` False: the API key and certificates are not read (exports, made where they are not)."""
    environ = os.environ if environ is None else environ
    path = Path(path)
    issues: list[Issue] = []
    doc = expand_document(read_toml(path), environ, issues)
    for key in doc:
        if key not in ("pool", "dev_server", "workers", "temporal"):
            issues.append(
                Issue(
                    key,
                    f"unknown section [{key}].",
                    did_you_mean(key, ["pool", "dev_server", "workers", "temporal"]),
                )
            )
    pool = parse_section(PoolSection, doc.get("pool"), ("pool",), issues)
    dev_server = parse_section(DevServer, doc.get("dev_server"), ("dev_server",), issues)
    temporal_raw, temporal_file = temporal_table(doc, path, issues, environ)
    move_docs_alias(temporal_raw, issues, temporal_file)
    temporal = parse_section(TemporalSection, temporal_raw, ("temporal",), issues, temporal_file)
    workers_raw = doc.get("workers", {})
    groups: dict[str, WorkerGroup] = {}
    salvaged: set[str] = set()  # keys already reported as invalid, whose defaults stood in for the other checks
    if not isinstance(workers_raw, dict):
        issues.append(Issue("workers", "must be a table of groups.", "write [workers.<group>] tables."))
        workers_raw = {}
    for name, raw in workers_raw.items():
        if not re.fullmatch(GROUP_NAME_PATTERN, name) or name in RESERVED_GROUP_NAMES:
            issues.append(group_name_issue(name))
            continue
        group = parse_section(WorkerGroup, raw, ("workers", name), issues)
        if group is None:  # its other keys are still checked: the group without the keys that failed
            group, dropped = salvage(WorkerGroup, raw)
            salvaged |= {f"workers.{name}.{key}" for key in dropped}
        if group is not None:
            groups[name] = group
    # A broken [pool] must not hide the other sections' errors: check them against the defaults meanwhile.
    pool_for_checks = pool or _fallback_pool(doc.get("pool"))
    catalog: Catalog | None = None
    try:
        catalog = load_app(app_ref(pool_for_checks, path))
    except AppImportError as exc:
        issues.append(Issue("pool.app", str(exc), ""))

    resolved: dict[str, ResolvedGroup] = {}
    scopes: dict[str, ResolvedScope] = {}
    if temporal is not None and catalog is not None:
        before = len(issues)
        resolved, scopes = check_topology(
            pool_for_checks,
            temporal,
            groups,
            catalog,
            issues,
            complete=len(groups) == len(workers_raw),
            temporal_file=temporal_file,
        )
        issues[before:] = [i for i in issues[before:] if not any(i.path.startswith(key) for key in salvaged)]
        for name, done in list(resolved.items()):
            if groups[name].env_file:
                files, values = read_env_files(name, groups[name].env_file, path.resolve().parent, environ, issues)
                resolved[name] = done.model_copy(update={"env_file": files, "env": {**values, **done.env_table}})
    connection = None
    if pool is not None and temporal is not None:
        connection = check_connection(pool, temporal, path, environ, issues, read_files=read_connection_files)
    errors = [issue for issue in issues if issue.severity is Severity.ERROR]
    if errors:
        raise TopologyError(str(path), errors + [issue for issue in issues if issue.severity is not Severity.ERROR])
    assert pool is not None and dev_server is not None and temporal is not None and catalog is not None
    assert connection is not None
    document = dict(doc)
    pool_raw = {key: value for key, value in doc.get("pool", {}).items() if key != "temporal_config_file"}
    document["pool"] = {**pool_raw, "app_path": str(app_ref(pool, path).search_path), **absolute_paths(pool, path)}
    if temporal_raw is not None:
        document["temporal"] = temporal_raw
    return Topology(
        path.resolve(), pool, dev_server, temporal, resolved, catalog, scopes, issues, document, connection=connection
    )


def absolute_paths(pool: PoolSection, path: Path) -> dict[str, Any]:
    """`[pool] api_key_file` and `[pool.tls]` paths made absolute, for the copy workers read from elsewhere."""
    base = path.resolve().parent
    moved: dict[str, Any] = {}
    if pool.api_key_file:
        moved["api_key_file"] = str((base / pool.api_key_file).expanduser())
    tls = pool.tls.model_dump(exclude_none=True)
    for key in ("server_ca_cert", "client_cert", "client_key"):
        if key in tls:
            tls[key] = str((base / tls[key]).expanduser())
    if tls:
        moved["tls"] = tls
    return moved

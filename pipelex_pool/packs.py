"""Task packs (named sets of workflows and activities) and worker-scope resolution, as Pipelex does it."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import temporalio.activity
import temporalio.workflow

from pipelex_pool.errors import PoolError
from pipelex_pool.topology.temporal_schema import WorkerScope


class AppImportError(PoolError):
    """`[pool] app` does not name an importable mapping of task packs."""


def workflow_name(cls: type) -> str:
    definition = temporalio.workflow._Definition.from_class(cls)
    return definition.name if definition and definition.name else cls.__name__


def activity_name(fn: Callable[..., Any]) -> str:
    definition = temporalio.activity._Definition.from_callable(fn)
    return definition.name if definition and definition.name else getattr(fn, "__name__", repr(fn))


@dataclass(frozen=True)
class TaskPack:
    """Workflows and activities that a scope can take as a whole (`required_tasks_packs`)."""

    workflows: tuple[type, ...] = ()
    activities: tuple[Callable[..., Any], ...] = ()

    def workflow_map(self) -> dict[str, type]:
        return {workflow_name(cls): cls for cls in self.workflows}

    def activity_map(self) -> dict[str, Callable[..., Any]]:
        return {activity_name(fn): fn for fn in self.activities}


@dataclass(frozen=True)
class Catalog:
    """Every pack, workflow and activity an app offers, by name."""

    packs: Mapping[str, TaskPack]
    workflows: Mapping[str, type] = field(init=False)
    activities: Mapping[str, Callable[..., Any]] = field(init=False)

    def __post_init__(self) -> None:
        workflows: dict[str, type] = {}
        activities: dict[str, Callable[..., Any]] = {}
        for pack in self.packs.values():
            workflows.update(pack.workflow_map())
            activities.update(pack.activity_map())
        object.__setattr__(self, "workflows", workflows)
        object.__setattr__(self, "activities", activities)


@dataclass(frozen=True)
class ResolvedScope:
    workflows: tuple[str, ...]
    activities: tuple[str, ...]

    @property
    def empty(self) -> bool:
        return not self.workflows and not self.activities


ALL_PACKS = "*"  # in required_tasks_packs: every pack of the app (the built-in scopes full, router and runner)


def resolve_scope(scope: WorkerScope, catalog: Catalog) -> ResolvedScope:
    """Apply packs -> required -> excluded -> disable_all, in that order. Unknown names are ignored here
    (validation reports them); the result keeps the catalog's order."""
    workflows: set[str] = set()
    activities: set[str] = set()
    packs = list(catalog.packs) if ALL_PACKS in scope.required_tasks_packs else scope.required_tasks_packs
    for pack_name in packs:
        pack = catalog.packs.get(pack_name)
        if pack is not None:
            workflows |= set(pack.workflow_map())
            activities |= set(pack.activity_map())
    workflows |= {name for name in scope.required_workflows if name in catalog.workflows}
    activities |= {name for name in scope.required_activities if name in catalog.activities}
    workflows -= set(scope.excluded_workflows)
    activities -= set(scope.excluded_activities)
    if scope.disable_all_workflows:
        workflows = set()
    if scope.disable_all_activities:
        activities = set()
    return ResolvedScope(
        workflows=tuple(name for name in catalog.workflows if name in workflows),
        activities=tuple(name for name in catalog.activities if name in activities),
    )


@dataclass(frozen=True)
class AppRef:
    """Where the task packs come from: `module:attr`, imported with `search_path` first on sys.path (the
    topology file's directory, or `[pool] app_path`), so an app beside its topology needs no PYTHONPATH."""

    spec: str
    search_path: Path | None = None


def load_app(app: AppRef | str) -> Catalog:
    """Import `module:attr`, a mapping of pack name -> TaskPack."""
    ref = AppRef(app) if isinstance(app, str) else app
    spec = ref.spec
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise AppImportError(f'{spec!r} is not of the form "module:attr" (e.g. "pipelex_pool.sim:packs")')
    where = ""
    if ref.search_path is not None:
        where = f" (looked in {ref.search_path} first, then the installed packages)"
        if str(ref.search_path) not in sys.path:
            sys.path.insert(0, str(ref.search_path))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AppImportError(
            f"cannot import module {module_name!r}{where}: {exc}; install it, fix the module path, or set "
            "[pool] app_path to the directory that holds it"
        ) from exc
    except Exception as exc:  # the user's code failed while being imported: say what it raised, where
        raise AppImportError(f"importing {module_name!r} raised {type(exc).__name__}: {exc}") from exc
    packs = getattr(module, attr, None)
    if not isinstance(packs, Mapping) or not all(isinstance(p, TaskPack) for p in packs.values()):
        raise AppImportError(
            f"{spec!r} must be a dict of pack name -> pipelex_pool.packs.TaskPack, found {type(packs).__name__}"
        )
    return Catalog(packs=dict(packs))

"""The package's structure as a maintainer relies on it: no import cycle among its modules (imports under
TYPE_CHECKING and inside functions included: a cycle is a tangle to understand all at once, however it is
written)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pipelex_pool"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from pkg import sub` depends on the submodule; `from mod import name`, on the module
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                while target and target not in modules:  # `import a.b.c` depends on the deepest known module
                    target = target.rpartition(".")[0]
                if target and target != name:
                    graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_package_has_no_import_cycle() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_check_finds_a_cycle() -> None:
    """The check itself, on a graph with a deliberate cycle (a -> b -> c -> a) beside a clean part."""
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [["a", "b", "c"]]


# -- one writer: the loop's state is assigned only where the README's architecture section says ------------------

# What the reconcile loop owns: a group's desired state (written by desired/requests.py's apply) and its processes,
# each replica's recorded facts (ReplicaInfo), the supervisor's own fields.
LOOP_STATE = frozenset({
    # SupervisedGroup: desired state, then process state
    "desired", "stopped_by_operator", "paused_by_operator", "removed", "revive", "roll_queue", "park_old",
    "parked_fate", "handles", "replacement", "retiring", "parked", "roll_aborted",
    # ReplicaInfo
    "identity", "status_text", "tasks", "usage", "sdk_metrics_given", "sdk_metrics", "inflight", "cached_runs",
    "build_id", "retiring_because", "pause", "pause_asked",
    # Supervisor
    "shutting_down", "exited_identities",
})  # fmt: skip
WRITERS = {  # the loop, and what it calls to carry a change out on its own task
    "supervisor/loop.py": "the reconcile loop",
    "supervisor/desired/requests.py": "apply: the one writer of desired state",
    "supervisor/rolling.py": "the loop's rolling-restart step (called by the loop, on its task)",
    "supervisor/convergence.py": "the loop's convergence of a group: starts, retirements, revivals, parked processes",
    "supervisor/reports.py": "the loop's recording of what replicas and observers report (on its task)",
    "supervisor/starting.py": "the loop's start of one replica: what it was given, recorded as it is launched",
    "supervisor/groups.py": "the group's constructor and its adoption of a reloaded group's state",
}
ELSEWHERE = {  # a name of the loop's state that another class also has (its own field, not the loop's)
    "supervisor/watchers/autoscale.py": {"desired"},  # AutoscaleState.desired: the autoscaler's own decision
}
MUTATORS = frozenset({"append", "extend", "insert", "remove", "pop", "popleft", "clear", "update", "add", "discard",
                      "setdefault", "sort", "difference_update"})  # fmt: skip


def writes(source: str, allowed: frozenset[str] = frozenset()) -> list[tuple[int, str]]:
    """(line, attribute) of each assignment to, or mutating call on, an attribute named in LOOP_STATE."""
    found = []
    for node in ast.walk(ast.parse(source)):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        elif isinstance(node, ast.Delete):
            targets = list(node.targets)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in MUTATORS:
            targets = [node.func.value]
        for target in targets:
            for part in ast.walk(target) if isinstance(target, ast.Tuple) else [target]:
                while isinstance(part, ast.Subscript):
                    part = part.value
                if isinstance(part, ast.Attribute) and part.attr in LOOP_STATE - allowed:
                    if not (isinstance(part.value, ast.Name) and part.value.id == "self"):  # a class's own field
                        found.append((getattr(node, "lineno", 0), part.attr))
    return found


def test_only_the_loop_writes_the_loop_s_state() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        where = str(path.relative_to(PACKAGE))
        if where in WRITERS:
            continue
        allowed = frozenset(ELSEWHERE.get(where, set()))
        offenders += [f"{where}:{line} writes .{attr}" for line, attr in writes(path.read_text(), allowed)]
    assert offenders == [], "the loop's state is written outside the loop (send it an event instead):\n" + "\n".join(
        offenders
    )


def test_the_single_writer_check_finds_a_write() -> None:
    """The check itself, on code that breaks the rule the ways it was broken before (a sampler writing a replica's
    usage, a hand-back clearing its in-flight attempts, a watcher scaling a group)."""
    source = """
def sample(info, group):
    info.usage = probe.sample()
    attempts, info.inflight = list(info.inflight.values()), {}
    group.roll_queue.append(3)
    group.handles[0] = None
    self.desired = 2
"""
    assert sorted(writes(source)) == [(3, "usage"), (4, "inflight"), (5, "roll_queue"), (6, "handles")]

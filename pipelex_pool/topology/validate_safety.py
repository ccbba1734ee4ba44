"""Checks of what a topology guarantees, beyond whether it is well-formed: tasks reach a worker that registers them,
restart settings keep their promises, and the retry budget survives a few dead workers."""

from __future__ import annotations

from datetime import timedelta

from pipelex_pool.errors import Issue, Severity
from pipelex_pool.packs import ResolvedScope
from pipelex_pool.topology.schema import ResolvedGroup
from pipelex_pool.topology.temporal_schema import TemporalSection

LOW_ATTEMPTS = 3  # at or below this, a few dead replicas fail a run: each hand-back spends one attempt
LONG_STICKY = timedelta(minutes=1)


def check_safety(
    temporal: TemporalSection,
    groups: dict[str, ResolvedGroup],
    scopes: dict[str, ResolvedScope],
    issues: list[Issue],
) -> None:
    _check_shared_queues(groups, scopes, issues)
    _check_restart_guarantees(groups, issues)
    _check_retry_budget(temporal, groups, scopes, issues)
    _check_sticky_timeouts(groups, scopes, issues)


def _check_shared_queues(
    groups: dict[str, ResolvedGroup], scopes: dict[str, ResolvedScope], issues: list[Issue]
) -> None:
    """Temporal gives a queue's tasks to any of its pollers: groups that poll one queue for one kind of task must
    register the same tasks, or some land on a worker that fails them ("not registered")."""
    for kind, task in (("workflows", "workflow"), ("activities", "activity")):
        by_queue: dict[str, dict[str, frozenset[str]]] = {}
        for group in groups.values():
            if group.command is not None:  # its own program: the pool does not know what it registers
                continue
            names = frozenset(getattr(scopes[group.scope], kind))
            if names:
                by_queue.setdefault(group.task_queue, {})[group.name] = names
        for queue, registered in by_queue.items():
            everything = frozenset().union(*registered.values())
            lacking = {name: sorted(everything - names) for name, names in registered.items() if everything - names}
            if not lacking:
                continue
            detail = "; ".join(f"group {name} lacks {', '.join(missing)}" for name, missing in sorted(lacking.items()))
            issues.append(
                Issue(
                    f"workers.{sorted(lacking)[0]}.scope",
                    f"groups {', '.join(sorted(registered))} all poll queue {queue!r} for {task} tasks but do not "
                    f"register the same ones ({detail}): Temporal hands any of them to any poller, so some would fail "
                    "as not registered.",
                    "give them scopes that register the same tasks, or separate queues (routing).",
                )
            )


def _check_restart_guarantees(groups: dict[str, ResolvedGroup], issues: list[Issue]) -> None:
    """Durations of 0 that would switch a promise off without saying so."""
    for group in groups.values():
        restart = group.restart
        where = f"workers.{group.name}"
        if restart.window <= timedelta(0) and restart.max_restarts > 0:
            issues.append(
                Issue(
                    f"{where}.restart.window",
                    "a window of 0 counts no restart, so a crash loop would never be given up on (FATAL).",
                    'set a window, e.g. "60s" (or max_restarts = 0 to give up at the first early death).',
                )
            )
        if restart.stable_after <= timedelta(0):
            issues.append(
                Issue(
                    f"{where}.restart.stable_after",
                    "stable_after of 0 forgets every early death at once, so a crash loop would never be FATAL.",
                    'set it above the time a replica needs to show it works, e.g. "30s".',
                )
            )
        if group.start_timeout <= timedelta(0):
            issues.append(
                Issue(
                    f"{where}.start_timeout",
                    "a start_timeout of 0 kills every replica before it can start.",
                    'set one, e.g. "60s".',
                )  # fmt: skip
            )


def _check_retry_budget(
    temporal: TemporalSection,
    groups: dict[str, ResolvedGroup],
    scopes: dict[str, ResolvedScope],
    issues: list[Issue],
) -> None:
    """A hand-back fails the dead replica's attempt, which spends one of the retry policy's attempts (as a timeout
    would): with few attempts, a few kills of the workers running an activity fail the run. Checked on the queues
    Pipelex's routing sends activities to (where its retry policy applies; a plain temporalio app sets its own)."""
    base = temporal.worker_config.retry_policy_config.maximum_attempts
    routed = {queue for route in temporal.worker_config.activity_queues.values() for queue in route.queues()}
    served = {g.task_queue for g in groups.values() if scopes[g.scope].activities or g.command}
    low: dict[tuple[str, int], list[str]] = {}
    for queue in sorted(routed & served):
        options = temporal.queue_options.get(queue)
        overlay = options.retry_policy_config if options else None
        path = "temporal.worker_config.retry_policy_config.maximum_attempts"
        attempts = base
        if overlay is not None and overlay.maximum_attempts is not None:
            path = f"temporal.queue_options.{queue}.retry_policy_config.maximum_attempts"
            attempts = overlay.maximum_attempts
        if isinstance(attempts, int) and attempts <= LOW_ATTEMPTS:
            low.setdefault((path, attempts), []).append(queue)
    for (path, attempts), queues in sorted(low.items()):
        issues.append(
            Issue(
                path,
                f"activities routed to {', '.join(queues)} get {attempts} attempt(s): {attempts} deaths of the "
                "replicas running one activity (a crash, an OOM kill, a kill -9) fail its run, since each hand-back "
                "spends an attempt as a timeout would.",
                'raise maximum_attempts (e.g. 10) or set it "unlimited", here or in [temporal.queue_options.<queue>'
                ".retry_policy_config].",
                Severity.WARNING,
            )
        )


def _check_sticky_timeouts(
    groups: dict[str, ResolvedGroup], scopes: dict[str, ResolvedScope], issues: list[Issue]
) -> None:
    """A long sticky timeout only costs when a workflow worker dies without the pool knowing (its host, or the
    pool with it): the pool moves a dead replica's runs at once, but nobody moves a dead host's."""
    by_profile: dict[str, list[ResolvedGroup]] = {}
    for group in groups.values():
        sticky = group.runtime_profile.sticky_queue_schedule_to_start_timeout
        if sticky is not None and sticky > LONG_STICKY and scopes[group.scope].workflows:
            by_profile.setdefault(group.profile, []).append(group)
    for profile, members in sorted(by_profile.items()):
        sticky = members[0].runtime_profile.sticky_queue_schedule_to_start_timeout
        issues.append(
            Issue(
                f"temporal.worker_runtime_profiles.profiles.{profile}.sticky_queue_schedule_to_start_timeout",
                f"{sticky} (groups {', '.join(g.name for g in members)}): if a whole host dies (or the pool with its "
                "workers), the runs its workflow replicas held wait this long before another worker takes them; "
                "a dead replica's runs the pool moves at once.",
                "temporalio's default is \"10s\", the pool's built-in default profile too.",
                Severity.NOTE,
            )
        )

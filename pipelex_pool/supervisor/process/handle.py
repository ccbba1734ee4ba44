"""ProcessHandle: one replica's state machine. Pure: it takes events and the time, and returns actions for the
reconcile loop to carry out; it never touches a process itself."""

from __future__ import annotations

import enum
import signal
from dataclasses import dataclass, field, replace

from pipelex_pool.supervisor.process.policy import CrashHistory, RestartPolicy, Verdict
from pipelex_pool.supervisor.process.state import ExitStatus, ProcState


class Action(enum.Enum):
    SPAWN = "spawn"  # start a new process for this handle
    TERMINATE = "terminate"  # SIGTERM the process group: graceful drain
    KILL = "kill"  # SIGKILL the process group


@dataclass
class HandleTimings:
    start_timeout: float  # STARTING longer than this -> killed, counted as a failed start
    stop_timeout: float  # graceful_shutdown_timeout + margin, then SIGKILL
    watchdog: float | None  # READY without WATCHDOG=1 for longer than this -> killed and restarted


@dataclass(eq=False)  # compared and hashed by identity: two handles are never "equal" by their field values
class ProcessHandle:
    """One replica slot of a group. `generation` grows with every spawn so late events of an old process are
    recognised and ignored."""

    group: str
    replica: int
    policy: RestartPolicy
    timings: HandleTimings
    state: ProcState = ProcState.STOPPED
    generation: int = 0
    pid: int | None = None
    started_at: float | None = None
    ready_at: float | None = None
    restarts: int = 0
    last_exit: ExitStatus | None = None
    reason: str = ""  # why it is in its state (fatal reason, kill reason, ...)
    backoff_until: float | None = None
    stop_deadline: float | None = None
    watchdog_deadline: float | None = None
    history: CrashHistory = field(default_factory=CrashHistory)
    kill_reason: str | None = None  # set when the supervisor killed it as failed (start timeout, watchdog)
    pool_kill: str | None = None  # why the pool sent SIGKILL to the current process, for its LAST EXIT
    restart_after_stop: bool = False
    # STARTING and saying it cannot reach Temporal: an outage, not a failure, so start_timeout does not run; it
    # counts again from when the process reaches Temporal (start_clock)
    waiting_for_temporal: bool = False
    start_clock: float | None = None

    @property
    def name(self) -> str:
        return f"{self.group}/{self.replica}"

    # -- events -------------------------------------------------------------------------------------------------

    def start(self, now: float) -> list[Action]:
        if self.state.alive:
            return []
        self.generation += 1
        self.state = ProcState.STARTING
        self.started_at = self.start_clock = now
        self.waiting_for_temporal = False
        self.ready_at = None
        self.pid = None
        self.backoff_until = None
        self.kill_reason = None
        self.pool_kill = None
        self.reason = ""
        return [Action.SPAWN]

    def spawned(self, pid: int) -> None:
        self.pid = pid

    def waiting(self, now: float) -> None:
        """The process cannot reach Temporal yet and keeps trying: its start timeout stops."""
        if self.state is ProcState.STARTING:
            self.waiting_for_temporal = True

    def reached_temporal(self, now: float) -> None:
        """It reached Temporal: the start timeout counts from now."""
        if self.state is ProcState.STARTING and self.waiting_for_temporal:
            self.waiting_for_temporal = False
            self.start_clock = now

    def ready(self, now: float) -> None:
        if self.state is ProcState.STARTING:
            self.waiting_for_temporal = False
            self.state = ProcState.READY
            self.ready_at = now
            if self.timings.watchdog:
                self.watchdog_deadline = now + self.timings.watchdog

    def watchdog_ping(self, now: float) -> None:
        if self.state is ProcState.READY and self.timings.watchdog:
            self.watchdog_deadline = now + self.timings.watchdog

    def excuse(self, seconds: float) -> None:
        """The supervisor was away for `seconds`: a silence in that time is its own, not the process's."""
        if self.watchdog_deadline is not None:
            self.watchdog_deadline += seconds

    def stop(self, now: float, *, restart: bool = False) -> list[Action]:
        """Drain it (and start it again once it exited, if `restart`)."""
        if self.state in (ProcState.STARTING, ProcState.READY):
            self.state = ProcState.STOPPING
            self.stop_deadline = now + self.timings.stop_timeout
            self.watchdog_deadline = None
            self.restart_after_stop = restart
            return [Action.TERMINATE]
        if self.state is ProcState.STOPPING:
            self.restart_after_stop = self.restart_after_stop or restart
            return []
        if restart:
            return self.start(now)
        if self.state is ProcState.BACKOFF:
            self.state = ProcState.STOPPED
            self.backoff_until = None
        return []

    def revive(self, now: float) -> list[Action]:
        """restart-failed: forget the crash history of a FATAL replica and start it."""
        if self.state is not ProcState.FATAL:
            return []
        self.history.reset()
        self.restarts = 0
        return self.start(now)

    def exited(self, status: ExitStatus, now: float) -> list[Action]:
        ready_for = None if self.ready_at is None else now - self.ready_at
        self.pid = None
        if self.pool_kill is not None and status.signal == signal.SIGKILL:
            status = replace(status, by_pool=self.pool_kill)  # not "possibly out of memory": we know who killed it
        self.last_exit = status
        self.stop_deadline = self.watchdog_deadline = None
        if self.state is ProcState.STOPPING and self.kill_reason is None:
            self.state = ProcState.STOPPED
            if self.restart_after_stop:
                self.restart_after_stop = False
                return self.start(now)
            return []
        failed = self.kill_reason is not None
        decision = self.policy.decide(status, ready_for, now, self.history, killed_as_failed=failed)
        detail = self.kill_reason or status.describe()
        if decision.verdict is Verdict.RESTART:
            self.state = ProcState.BACKOFF  # left at the loop's next tick when the delay is 0
            self.backoff_until = now + decision.delay
            when = f"in {decision.delay:.1f}s" if decision.delay else "at once"
            self.reason = f"{detail} ({decision.reason}); restarting {when}"
        elif decision.verdict is Verdict.FATAL:
            self.state = ProcState.FATAL
            self.reason = f"{detail}: {decision.reason}"
        else:
            self.state = ProcState.EXITED
            self.reason = f"{detail} ({decision.reason})"
        return []

    def spawn_failed(self, error: str, now: float) -> list[Action]:
        """The program could not be started at all (missing binary, bad cwd): a failure like exit 127."""
        self.kill_reason = f"spawn failed: {error}"
        return self.exited(ExitStatus(code=127), now)

    # -- time ---------------------------------------------------------------------------------------------------

    def tick(self, now: float) -> list[Action]:
        if self.state is ProcState.STARTING and self.start_clock is not None and not self.waiting_for_temporal:
            if now >= self.start_clock + self.timings.start_timeout:
                return self._kill_as_failed(now, f"not ready within start_timeout ({self.timings.start_timeout:g}s)")
        elif self.state is ProcState.READY and self.watchdog_deadline is not None:
            if now >= self.watchdog_deadline:
                return self._kill_as_failed(now, f"no WATCHDOG=1 for {self.timings.watchdog:g}s")
        elif self.state is ProcState.STOPPING and self.stop_deadline is not None:
            if now >= self.stop_deadline:
                self.stop_deadline = None
                self.pool_kill = f"still draining after {self.timings.stop_timeout:g}s (its grace + margin)"
                return [Action.KILL]
        elif self.state is ProcState.BACKOFF and self.backoff_until is not None:
            if now >= self.backoff_until:
                self.restarts += 1
                return self.start(now)
        return []

    def _kill_as_failed(self, now: float, reason: str) -> list[Action]:
        self.kill_reason = self.pool_kill = reason
        self.state = ProcState.STOPPING
        self.stop_deadline = None
        self.watchdog_deadline = None
        return [Action.KILL]

    def next_deadline(self) -> float | None:
        """When `tick` may next have something to do."""
        if self.state is ProcState.STARTING:
            if self.start_clock is None or self.waiting_for_temporal:
                return None
            return self.start_clock + self.timings.start_timeout
        if self.state is ProcState.READY:
            return self.watchdog_deadline
        if self.state is ProcState.STOPPING:
            return self.stop_deadline
        if self.state is ProcState.BACKOFF:
            return self.backoff_until
        return None

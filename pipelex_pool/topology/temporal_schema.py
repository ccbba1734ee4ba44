"""The Pipelex `[temporal]` configuration schema, as Pipelex's own code defines it.

Defaults here play the part of Pipelex's base `pipelex.toml`: a topology that names only `default_task_queue`
gets the same timeouts, the `default` runtime profile, the built-in scopes and a local server.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import Field, model_validator

from pipelex_pool.topology.codec_schema import PayloadCodecConfig
from pipelex_pool.topology.types import Duration, StrictModel

Unlimited = Literal["unlimited"]
SEARCH_ATTRIBUTE_NAMES = ("PipeCode", "PipelineRunId", "SessionId", "UserId", "DomainCode")


class RetryPolicyConfig(StrictModel):
    """The base retry policy of every activity."""

    initial_interval: Duration = timedelta(seconds=1)
    backoff_coefficient: float = Field(default=2.0, ge=1.0)
    maximum_interval: Duration | Unlimited = timedelta(seconds=100)
    maximum_attempts: int | Unlimited = 3
    non_retryable_error_types: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _positive(self) -> RetryPolicyConfig:
        if self.initial_interval <= timedelta(0):
            raise ValueError("initial_interval must be > 0")
        if isinstance(self.maximum_attempts, int) and self.maximum_attempts <= 0:
            raise ValueError('maximum_attempts must be > 0 or "unlimited"')
        return self


class RetryPolicyOverlay(StrictModel):
    """A partial retry policy laid over the base one (queue or handle level)."""

    initial_interval: Duration | None = None
    backoff_coefficient: float | None = Field(default=None, ge=1.0)
    maximum_interval: Duration | Unlimited | None = None
    maximum_attempts: int | Unlimited | None = None
    non_retryable_error_types: list[str] | None = None
    non_retryable_error_types_extra: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _positive(self) -> RetryPolicyOverlay:
        if self.initial_interval is not None and self.initial_interval <= timedelta(0):
            raise ValueError("initial_interval must be > 0")
        if isinstance(self.maximum_attempts, int) and self.maximum_attempts <= 0:
            raise ValueError('maximum_attempts must be > 0 or "unlimited"')
        return self


class HandleOptions(StrictModel):
    start_to_close_timeout: Duration | None = None
    retry_policy_config: RetryPolicyOverlay | None = None


class ActivityRoute(StrictModel):
    """Where one activity runs: by handle, else `default`."""

    default: str
    by_handle: dict[str, str] = Field(default_factory=dict)
    handle_options: dict[str, HandleOptions] = Field(default_factory=dict)

    def queues(self) -> set[str]:
        return {self.default, *self.by_handle.values()}


class WorkerConfig(StrictModel):
    default_task_queue: str | None = None
    task_queue: str | None = None  # legacy name of default_task_queue, accepted with a deprecation warning
    workflow_execution_timeout: Duration = timedelta(hours=1)
    default_activity_start_to_close_timeout: Duration = timedelta(minutes=10)
    run_timeout: Duration | None = None
    task_timeout: Duration | None = None
    start_delay: Duration | None = None
    rpc_timeout: Duration | None = None
    default_activity_heartbeat_timeout: Duration | None = None
    retry_policy_config: RetryPolicyConfig = Field(default_factory=RetryPolicyConfig)
    activity_queues: dict[str, ActivityRoute] = Field(default_factory=dict)

    @property
    def effective_default_task_queue(self) -> str:
        return self.default_task_queue or self.task_queue or "temporal_task_queue"


class QueueOptions(StrictModel):
    start_to_close_timeout: Duration | None = None
    schedule_to_close_timeout: Duration | None = None
    schedule_to_start_timeout: Duration | None = None
    heartbeat_timeout: Duration | None = None
    retry_policy_config: RetryPolicyOverlay | None = None
    max_task_queue_activities_per_second: float | None = Field(default=None, gt=0)


class WorkerScope(StrictModel):
    required_tasks_packs: list[str] = Field(default_factory=list)
    required_workflows: list[str] = Field(default_factory=list)
    required_activities: list[str] = Field(default_factory=list)
    excluded_workflows: list[str] = Field(default_factory=list)
    excluded_activities: list[str] = Field(default_factory=list)
    disable_all_workflows: bool = False
    disable_all_activities: bool = False


_LLM = ["act_llm_gen_text", "act_llm_gen_object", "act_llm_gen_object_list"]
# full, router and runner take every pack of the app ("*"): with Pipelex's packs that is crafting + pipe, as in
# Pipelex's own pipelex.toml; with your own app, all of its workflows and activities. The runner-* scopes name
# Pipelex's activities (with another app they resolve to nothing, which `validate` refuses for a group using one).
BUILTIN_SCOPES: dict[str, WorkerScope] = {
    "full": WorkerScope(required_tasks_packs=["*"]),
    "router": WorkerScope(required_tasks_packs=["*"], disable_all_activities=True),
    "runner": WorkerScope(required_tasks_packs=["*"], disable_all_workflows=True),
    "runner-llm": WorkerScope(required_activities=_LLM, disable_all_workflows=True),
    "runner-img-gen": WorkerScope(
        required_activities=["act_img_gen_images", "act_render_page_views"], disable_all_workflows=True
    ),
    "runner-extract": WorkerScope(
        required_activities=["act_extract_gen_extract_pages", "act_render_page_views"],
        disable_all_workflows=True,
    ),
    "runner-jinja2": WorkerScope(required_activities=["act_jinja2_gen_text"], disable_all_workflows=True),
}


class WorkerScopes(StrictModel):
    default_scope: str = "full"
    scopes: dict[str, WorkerScope] = Field(default_factory=dict)

    def all_scopes(self) -> dict[str, WorkerScope]:
        """Built-in scopes, then the file's own (which may redefine a built-in one)."""
        return {**BUILTIN_SCOPES, **self.scopes}


PROFILE_FIELDS = (
    "max_cached_workflows",
    "max_concurrent_workflow_tasks",
    "max_concurrent_activities",
    "max_concurrent_local_activities",
    "max_concurrent_workflow_task_polls",
    "max_concurrent_activity_task_polls",
    "max_activities_per_second",
    "sticky_queue_schedule_to_start_timeout",
    "max_heartbeat_throttle_interval",
    "default_heartbeat_throttle_interval",
    "graceful_shutdown_timeout",
)


class RuntimeProfile(StrictModel):
    """Worker concurrency knobs; each field maps 1:1 onto the `temporalio.worker.Worker` argument."""

    tuning_mode: str = "explicit"
    max_cached_workflows: int | None = Field(default=None, ge=0)
    max_concurrent_workflow_tasks: int | None = Field(default=None, gt=0)
    max_concurrent_activities: int | None = Field(default=None, ge=0)
    max_concurrent_local_activities: int | None = Field(default=None, ge=0)
    max_concurrent_workflow_task_polls: int | None = Field(default=None, gt=0)
    max_concurrent_activity_task_polls: int | None = Field(default=None, ge=0)
    max_activities_per_second: float | None = Field(default=None, gt=0)
    sticky_queue_schedule_to_start_timeout: Duration | None = None
    max_heartbeat_throttle_interval: Duration | None = None
    default_heartbeat_throttle_interval: Duration | None = None
    graceful_shutdown_timeout: Duration | None = None

    def missing_fields(self) -> list[str]:
        return [name for name in PROFILE_FIELDS if getattr(self, name) is None]

    def filled_from(self, base: RuntimeProfile) -> RuntimeProfile:
        """This profile with its unset fields taken from `base`."""
        return self.model_copy(update={name: getattr(base, name) for name in self.missing_fields()})


BUILTIN_DEFAULT_PROFILE = RuntimeProfile(
    max_cached_workflows=10000,
    max_concurrent_workflow_tasks=1000,
    max_concurrent_activities=1000,
    max_concurrent_local_activities=1000,
    max_concurrent_workflow_task_polls=100,
    max_concurrent_activity_task_polls=100,
    max_activities_per_second=1000,
    # temporalio's default, not Pipelex's 30 min: a run held by a worker that died unseen (its host, or the pool
    # with it) waits this long; a dead replica's runs the pool moves at once (workflow hand-back)
    sticky_queue_schedule_to_start_timeout=timedelta(seconds=10),
    max_heartbeat_throttle_interval=timedelta(hours=1),
    default_heartbeat_throttle_interval=timedelta(hours=1),
    graceful_shutdown_timeout=timedelta(minutes=30),
)


class WorkerRuntimeProfiles(StrictModel):
    default_profile: str = "default"
    profiles: dict[str, RuntimeProfile] = Field(default_factory=dict)

    def all_profiles(self) -> dict[str, RuntimeProfile]:
        return {"default": BUILTIN_DEFAULT_PROFILE, **self.profiles}


class ServerConfig(StrictModel):
    description: str = ""
    target_host: str = "localhost:7233"
    namespace: str = "default"
    api_key_method: Literal["none", "env_var", "secret_provider"] = "none"
    api_key_id: str | None = None


class TemporalLogConfig(StrictModel):
    """`[temporal.temporal_config.temporal_log_config]`: how Pipelex's own workers format their log lines. The
    pool's built-in worker logs with structlog and reads none of it; it is accepted so a pipelex.toml loads as is."""

    is_workflow_info_on_message: bool = False
    is_workflow_info_on_extra: bool = True
    is_full_workflow_info_on_extra: bool = False
    is_activity_info_on_message: bool = False
    is_activity_info_on_extra: bool = True
    is_full_activity_info_on_extra: bool = False
    is_formatter_enabled: bool = True
    is_prefix_enabled: bool = True
    managed_loggers: list[str] = Field(default_factory=list)
    is_dispatch_resolution_traced: bool = False


class TemporalConfig(StrictModel):
    selected_server: str = "local"
    temporal_server_configs: dict[str, ServerConfig] = Field(default_factory=dict)
    temporal_log_config: TemporalLogConfig = Field(default_factory=TemporalLogConfig)

    def all_servers(self) -> dict[str, ServerConfig]:
        return self.temporal_server_configs or {"local": ServerConfig(description="local dev server")}


class SearchAttributes(StrictModel):
    enabled: bool = True
    attributes: list[Literal["PipeCode", "PipelineRunId", "SessionId", "UserId", "DomainCode"]] = Field(
        default_factory=lambda: list(SEARCH_ATTRIBUTE_NAMES)  # type: ignore[arg-type]
    )


class TemporalSection(StrictModel):
    """`[temporal]` of pipelex.toml."""

    is_enabled: bool = True
    worker_config: WorkerConfig = Field(default_factory=WorkerConfig)
    queue_options: dict[str, QueueOptions] = Field(default_factory=dict)
    worker_runtime_profiles: WorkerRuntimeProfiles = Field(default_factory=WorkerRuntimeProfiles)
    worker_scopes: WorkerScopes = Field(default_factory=WorkerScopes)
    temporal_config: TemporalConfig = Field(default_factory=TemporalConfig)
    search_attributes: SearchAttributes = Field(default_factory=SearchAttributes)
    payload_codec_config: PayloadCodecConfig = Field(default_factory=PayloadCodecConfig)

    @property
    def default_task_queue(self) -> str:
        return self.worker_config.effective_default_task_queue

    def known_queues(self) -> list[str]:
        """Every queue the config names: default, routing targets, queue_options keys (Pipelex's rule)."""
        queues = {self.default_task_queue, *self.queue_options}
        for route in self.worker_config.activity_queues.values():
            queues |= route.queues()
        return sorted(queues)

    def selected_server(self) -> ServerConfig | None:
        return self.temporal_config.all_servers().get(self.temporal_config.selected_server)

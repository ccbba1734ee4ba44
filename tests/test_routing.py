"""Pipelex's routing rules, as pure functions: queue by handle -> default -> default_task_queue, options layered
baseline -> queue -> handle."""

from __future__ import annotations

from datetime import timedelta

from pipelex_pool.routing import resolve_step
from pipelex_pool.topology.temporal_schema import TemporalSection

TEMPORAL = TemporalSection.model_validate(
    {
        "worker_config": {
            "default_task_queue": "main_q",
            "default_activity_start_to_close_timeout": "0:10:00",
            "default_activity_heartbeat_timeout": "30s",
            "retry_policy_config": {
                "initial_interval": "1s",
                "maximum_attempts": 5,
                "maximum_interval": "unlimited",
                "non_retryable_error_types": ["Base"],
            },
            "activity_queues": {
                "act_llm_gen_text": {
                    "default": "openai_q",
                    "by_handle": {"anthropic-default": "anthropic_q"},
                    "handle_options": {
                        "anthropic-default": {
                            "start_to_close_timeout": "4m",
                            "retry_policy_config": {"maximum_attempts": "unlimited"},
                        },
                        "gpt-fast": {"start_to_close_timeout": "30s"},
                    },
                }
            },
        },
        "queue_options": {
            "openai_q": {"start_to_close_timeout": "3m", "schedule_to_start_timeout": "1m"},
            "anthropic_q": {
                "heartbeat_timeout": "1m",
                "retry_policy_config": {"non_retryable_error_types_extra": ["Auth"]},
            },
        },
    }
)


def test_unrouted_activity_runs_on_the_default_queue_with_the_baseline() -> None:
    step = resolve_step(TEMPORAL, "act_deliver", None)
    assert step.task_queue == "main_q"
    assert step.start_to_close_timeout == timedelta(minutes=10)
    assert step.heartbeat_timeout == timedelta(seconds=30)
    assert step.retry.maximum_attempts == 5 and step.retry.maximum_interval is None  # "unlimited"
    assert step.retry.non_retryable_error_types == ("Base",)


def test_default_route_takes_the_queue_options() -> None:
    step = resolve_step(TEMPORAL, "act_llm_gen_text", None)
    assert step.task_queue == "openai_q"
    assert step.start_to_close_timeout == timedelta(minutes=3)
    assert step.schedule_to_start_timeout == timedelta(minutes=1)


def test_unknown_handle_falls_back_to_the_default_queue_but_keeps_its_options() -> None:
    step = resolve_step(TEMPORAL, "act_llm_gen_text", "gpt-fast")
    assert step.task_queue == "openai_q"
    assert step.start_to_close_timeout == timedelta(seconds=30)  # handle over queue


def test_handle_route_layers_queue_then_handle() -> None:
    step = resolve_step(TEMPORAL, "act_llm_gen_text", "anthropic-default")
    assert step.task_queue == "anthropic_q"
    assert step.start_to_close_timeout == timedelta(minutes=4)
    assert step.heartbeat_timeout == timedelta(minutes=1)
    assert step.retry.maximum_attempts == 0  # unlimited
    assert step.retry.non_retryable_error_types == ("Base", "Auth")

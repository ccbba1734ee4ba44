"""Field types shared by the topology models."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer, WithJsonSchema

from pipelex_pool.units import (
    DURATION_HELP,
    SIZE_HELP,
    format_duration,
    parse_address,
    parse_duration,
    parse_port_range,
    parse_size,
)

# What an editor checks as you type (`pipelex-pool schema`): the same forms the parsers accept.
DURATION_PATTERN = r"^\s*((\d+:)?\d{1,2}:\d{1,2}(\.\d+)?|(\d+(\.\d+)?(ms|s|m|h|d))+)\s*$"
SIZE_PATTERN = r"^\s*\d+(\.\d+)?\s*([KkMmGgTt][Ii]?[Bb]|[Bb])?\s*$"

Duration = Annotated[
    timedelta,
    BeforeValidator(parse_duration),
    PlainSerializer(format_duration, return_type=str, when_used="json"),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "pattern": DURATION_PATTERN}, {"type": "number", "minimum": 0}],
            "description": DURATION_HELP + " (a bare number is seconds)",
        }
    ),
]
Size = Annotated[
    int,
    BeforeValidator(parse_size),
    WithJsonSchema(
        {
            "anyOf": [{"type": "string", "pattern": SIZE_PATTERN}, {"type": "integer", "minimum": 0}],
            "description": SIZE_HELP,
        }
    ),
]
Address = Annotated[  # "host:port"
    str, BeforeValidator(parse_address), WithJsonSchema({"type": "string", "pattern": r"^\S+:\d+$"})
]
PortRange = Annotated[  # "host:first-last"
    str, BeforeValidator(parse_port_range), WithJsonSchema({"type": "string", "pattern": r"^\S+:\d+-\d+$"})
]


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo in a topology file must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

"""Field types shared by the topology models."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer

from pipelex_pool.units import format_duration, parse_duration, parse_size

Duration = Annotated[
    timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str, when_used="json")
]
Size = Annotated[int, BeforeValidator(parse_size)]


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo in a topology file must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

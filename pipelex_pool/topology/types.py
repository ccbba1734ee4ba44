"""Field types shared by the topology models."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, PlainSerializer

from pipelex_pool.units import format_duration, parse_address, parse_duration, parse_port_range, parse_size

Duration = Annotated[
    timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration, return_type=str, when_used="json")
]
Size = Annotated[int, BeforeValidator(parse_size)]
Address = Annotated[str, BeforeValidator(parse_address)]  # "host:port"
PortRange = Annotated[str, BeforeValidator(parse_port_range)]  # "host:first-last"


class StrictModel(BaseModel):
    """Unknown keys are errors: a typo in a topology file must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)

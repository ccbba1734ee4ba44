"""A JSON Schema of the topology file, for editors (Taplo / Even Better TOML): `pipelex-pool schema`.

It describes what `validate` checks key by key (names, types, durations and sizes as strings with their patterns,
unknown keys refused); the cross-checks (a scope that exists, a routed queue with options, ...) stay `validate`'s.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from pipelex_pool.contract import GROUP_NAME_PATTERN
from pipelex_pool.topology.schema import DevServer, PoolSection, WorkerGroup
from pipelex_pool.topology.temporal_schema import TemporalSection


def topology_json_schema() -> dict[str, Any]:
    sections: list[type[BaseModel]] = [PoolSection, DevServer, WorkerGroup, TemporalSection]
    refs, top = models_json_schema([(model, "validation") for model in sections], ref_template="#/$defs/{model}")
    pool, dev_server, worker, temporal = (refs[(model, "validation")] for model in sections)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "pipelex-pool topology",
        "description": "A pool of Temporal workers: [pool], [dev_server], [workers.<group>] and Pipelex's [temporal].",
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "pool": pool,
            "dev_server": dev_server,
            "workers": {
                "type": "object",
                "description": "One table per worker group; the name is part of file names and worker identities.",
                "propertyNames": {"pattern": GROUP_NAME_PATTERN},
                "additionalProperties": worker,
            },
            "temporal": temporal,
        },
        "$defs": top.get("$defs", {}),
    }

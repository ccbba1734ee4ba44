"""Namespace set-up: the custom search attributes Pipelex's dashboard filters on (all Keyword), idempotent."""

from __future__ import annotations

from dataclasses import dataclass, field

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import Client

KEYWORD = IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD


@dataclass
class NamespacePlan:
    namespace: str
    wanted: list[str]
    present: list[str] = field(default_factory=list)  # already there as Keyword
    missing: list[str] = field(default_factory=list)  # to create
    conflicts: dict[str, str] = field(default_factory=dict)  # there with another type: an admin must decide

    def commands(self, connection: list[str]) -> list[str]:
        """What an admin runs with the temporal CLI to do the same; `connection`: its connection options
        (Connection.cli_flags: TLS and the key as shell references, never the secret)."""
        options = " ".join(connection)
        return [
            f"temporal operator search-attribute create {options} --name {name} --type Keyword" for name in self.missing
        ]

    def as_dict(self) -> dict[str, object]:
        return {
            "namespace": self.namespace,
            "wanted": self.wanted,
            "present": self.present,
            "missing": self.missing,
            "conflicts": self.conflicts,
        }


async def plan_namespace(client: Client, wanted: list[str]) -> NamespacePlan:
    response = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    existing = dict(response.custom_attributes)
    plan = NamespacePlan(client.namespace, wanted)
    for name in wanted:
        if name not in existing:
            plan.missing.append(name)
        elif existing[name] == KEYWORD:
            plan.present.append(name)
        else:
            plan.conflicts[name] = IndexedValueType.Name(existing[name])
    return plan


async def apply_namespace(client: Client, plan: NamespacePlan) -> None:
    if plan.missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=plan.namespace, search_attributes={name: KEYWORD for name in plan.missing}
            )
        )

"""`[temporal.payload_codec_config]` and its storage providers, as Pipelex's own models define them.

Pipelex's storage codec offloads every payload whose serialized size reaches `size_threshold` to a storage
provider and writes a small reference into Temporal's history instead; a worker without the same codec cannot read
those payloads. The pool honours the section (pipelex_pool/temporal/codec.py) for the providers that processes can
share: `local` (files) and `s3`. `in_memory` (one process's memory) and `gcp` are refused by `validate`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from pipelex_pool.topology.types import StrictModel

StorageMethod = Literal["local", "in_memory", "s3", "gcp"]


class StorageMethodConfig(StrictModel):
    """What every provider table has: `uri_format`, which must hold a `{hash}` placeholder (Pipelex's rule)."""

    uri_format: str = "{hash}"

    @model_validator(mode="after")
    def _hash_placeholder(self) -> StorageMethodConfig:
        if "{hash}" not in self.uri_format:
            raise ValueError(f"uri_format {self.uri_format!r} must contain a {{hash}} placeholder")
        return self


class StorageLocalConfig(StorageMethodConfig):
    local_storage_path: str = Field(min_length=1)  # relative paths are relative to the worker's directory


class StorageInMemoryConfig(StorageMethodConfig):
    pass


class StorageBucketConfig(StorageMethodConfig):
    bucket_name: str = Field(min_length=1, pattern=r"^[^./]+$")  # Pipelex: no dot, no slash
    signed_urls_lifespan_seconds: int | Literal["disabled"] = 3600


class StorageS3Config(StorageBucketConfig):
    region: str = Field(min_length=1)


class StorageGcpConfig(StorageBucketConfig):
    project_id: str = Field(min_length=1)


class StorageProviderConfig(StrictModel):
    """Which provider stores offloaded payloads, and its table (required for the selected method only)."""

    method: StorageMethod = "local"
    local: StorageLocalConfig | None = None
    in_memory: StorageInMemoryConfig | None = None
    s3: StorageS3Config | None = None
    gcp: StorageGcpConfig | None = None

    @model_validator(mode="after")
    def _method_table(self) -> StorageProviderConfig:
        if getattr(self, self.method) is None:
            raise ValueError(f"method is {self.method!r} but there is no [...storage_provider_config.{self.method}]")
        return self


class PayloadCodecConfig(StrictModel):
    """Pipelex's storage codec: payloads of `size_threshold` bytes or more (serialized) go to storage, under
    `storage_prefix`, and Temporal's history holds a reference."""

    is_enabled: bool = False
    size_threshold: int = Field(default=1_048_576, gt=0)
    storage_prefix: str = "temporal-payloads/"
    storage_provider_config: StorageProviderConfig = Field(
        default_factory=lambda: StorageProviderConfig(
            method="local",
            local=StorageLocalConfig(local_storage_path=".pipelex/temporal-payload-store"),
        )
    )

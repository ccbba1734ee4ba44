"""Pipelex's storage payload codec, on the same wire format, so a Pipelex client and the pool's workers read each
other's payloads.

The format (from Pipelex's `StoragePayloadCodec` and storage providers):
- a payload whose serialized protobuf (`Payload.SerializeToString()`) is `size_threshold` bytes or more is stored
  as those bytes under the key `<storage_prefix>/<sha256 hex of the bytes>`, or `<storage_prefix>/<user_id>/
  <pipeline_run_id>/<sha256>` when the payload is `json/plain` holding a top-level `job_metadata` with string
  `user_id` and `pipeline_run_id` (so a client's objects can be cleaned up together); the prefix always ends
  with one `/`;
- Temporal's history gets `Payload(metadata={"encoding": b"binary/storage-ref"}, data=b"pipelex-storage://<key>")`;
- `local` keeps the object in the file `<local_storage_path>/<key>`, `s3` as the object `<key>` of `bucket_name`.
Decoding reverses it; a reference without the scheme (older Pipelex releases wrote the bare key) is read too.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Sequence
from hashlib import sha256
from pathlib import Path
from typing import Any, Protocol

import anyio.to_thread
from temporalio.api.common.v1 import Payload
from temporalio.converter import DataConverter, PayloadCodec

from pipelex_pool.errors import PoolError
from pipelex_pool.topology.codec_schema import PayloadCodecConfig, StorageS3Config

STORAGE_REF_ENCODING = b"binary/storage-ref"
JSON_PLAIN_ENCODING = b"json/plain"
STORAGE_SCHEME = "pipelex-storage://"


class PayloadStorageError(PoolError):
    """An offloaded payload could not be stored or read back."""


class PayloadStore(Protocol):
    """Where offloaded payloads live, by key (no scheme)."""

    where: str

    async def store(self, key: str, data: bytes) -> None: ...

    async def load(self, key: str) -> bytes: ...


class LocalStore:
    """Files under a root directory, shared by every replica on the host. Keys are content hashes, so two replicas
    writing one key write the same bytes; each write is a rename of a complete file, so no reader sees half."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.where = str(root)

    def path_of(self, key: str) -> Path:
        relative = Path(key)
        path = (self.root / relative).resolve()
        if relative.is_absolute() or not path.is_relative_to(self.root.resolve()):
            raise PayloadStorageError(f"payload key {key!r} leaves the storage directory {self.root}")
        return path

    async def store(self, key: str, data: bytes) -> None:
        await anyio.to_thread.run_sync(self._write, self.path_of(key), data)

    @staticmethod
    def _write(path: Path, data: bytes) -> None:
        if path.exists():  # content-addressed: the same key holds the same bytes
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    async def load(self, key: str) -> bytes:
        path = self.path_of(key)
        try:
            return await anyio.to_thread.run_sync(path.read_bytes)
        except FileNotFoundError as exc:
            raise PayloadStorageError(
                f"offloaded payload {key!r} is not in {self.root} (a fleet on several hosts needs shared storage: "
                "s3, or one network directory mounted at local_storage_path on every host)"
            ) from exc


class S3Store:
    """Objects in an S3 bucket (boto3, the `s3` extra). Credentials and the endpoint come from boto3's own chain:
    AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_PROFILE, and AWS_ENDPOINT_URL for an S3-compatible server."""

    def __init__(self, config: StorageS3Config) -> None:
        try:
            import boto3
        except ImportError as exc:
            raise PayloadStorageError(
                'payload_codec_config uses method = "s3", which needs boto3: pip install "pipelex-pool[s3]"'
            ) from exc
        self.bucket = config.bucket_name
        self.where = f"s3://{config.bucket_name}"
        self.client: Any = boto3.client("s3", region_name=config.region)

    async def store(self, key: str, data: bytes) -> None:
        await anyio.to_thread.run_sync(lambda: self.client.put_object(Bucket=self.bucket, Key=key, Body=data))

    async def load(self, key: str) -> bytes:
        def get() -> bytes:
            try:
                body: bytes = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
            except self.client.exceptions.NoSuchKey as exc:
                raise PayloadStorageError(f"offloaded payload {key!r} is not in {self.where}") from exc
            return body

        return await anyio.to_thread.run_sync(get)


def store_for(config: PayloadCodecConfig, base: Path | None = None) -> PayloadStore:
    """The store the codec's provider names; `base` resolves a relative local_storage_path (default: cwd)."""
    provider = config.storage_provider_config
    if provider.method == "local" and provider.local is not None:
        path = Path(provider.local.local_storage_path).expanduser()
        return LocalStore(path if path.is_absolute() else (base or Path.cwd()) / path)
    if provider.method == "s3" and provider.s3 is not None:
        return S3Store(provider.s3)
    raise PayloadStorageError(
        f"payload_codec_config: storage method {provider.method!r} cannot be shared by a pool's processes; "
        'use "local" or "s3"'
    )


def _job_routing(payload: Payload) -> tuple[str, str] | None:
    if payload.metadata.get("encoding") != JSON_PLAIN_ENCODING:
        return None
    try:
        data = json.loads(payload.data)
    except (ValueError, UnicodeDecodeError):
        return None
    job = data.get("job_metadata") if isinstance(data, dict) else None
    if not isinstance(job, dict):
        return None
    user, run = job.get("user_id"), job.get("pipeline_run_id")
    return (user, run) if isinstance(user, str) and isinstance(run, str) else None


class StoragePayloadCodec(PayloadCodec):
    """Offloads payloads of `size_threshold` serialized bytes or more to `store`, as Pipelex's codec does."""

    def __init__(self, store: PayloadStore, size_threshold: int, storage_prefix: str) -> None:
        self.store = store
        self.size_threshold = size_threshold
        self.prefix = storage_prefix if storage_prefix.endswith("/") else f"{storage_prefix}/"

    def key_for(self, payload: Payload, serialized: bytes) -> str:
        digest = sha256(serialized).hexdigest()
        routing = _job_routing(payload)
        return f"{self.prefix}{routing[0]}/{routing[1]}/{digest}" if routing else f"{self.prefix}{digest}"

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        encoded = []
        for payload in payloads:
            serialized = payload.SerializeToString()
            if len(serialized) < self.size_threshold:
                encoded.append(payload)
                continue
            key = self.key_for(payload, serialized)
            await self.store.store(key, serialized)
            encoded.append(Payload(metadata={"encoding": STORAGE_REF_ENCODING}, data=f"{STORAGE_SCHEME}{key}".encode()))
        return encoded

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        decoded = []
        for payload in payloads:
            if payload.metadata.get("encoding") != STORAGE_REF_ENCODING:
                decoded.append(payload)
                continue
            key = payload.data.decode().removeprefix(STORAGE_SCHEME)
            original = Payload()
            original.ParseFromString(await self.store.load(key))
            decoded.append(original)
        return decoded


def data_converter(config: PayloadCodecConfig, base: Path | None = None) -> DataConverter:
    """temporalio's default converter, with the storage codec when the config enables it."""
    if not config.is_enabled:
        return DataConverter.default
    codec = StoragePayloadCodec(store_for(config, base), config.size_threshold, config.storage_prefix)
    return dataclasses.replace(DataConverter.default, payload_codec=codec)

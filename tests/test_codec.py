"""Pipelex's payload codec through a real pool: a 2 MiB activity result goes to storage and Temporal's history holds
a small reference (read by a client without the codec); a payload encoded as Pipelex encodes it (built here from
the format, not with the pool's code) is read by the pool's workers; the same over S3 (a local S3 server)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence
from hashlib import sha256
from pathlib import Path
from typing import Any

import pytest
import tomlkit
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.converter import DataConverter, PayloadCodec

from pipelex_pool.temporal.codec import data_converter
from pipelex_pool.topology.codec_schema import PayloadCodecConfig
from tests.conftest import TemporalServer, free_port
from tests.helpers import history
from tests.pool import Pool

pytestmark = pytest.mark.slow

APPS = Path(__file__).resolve().parent / "apps"
SCHEME = b"pipelex-storage://"
TWO_MIB = 2 * 2**20


def codec_topology(pool: Pool, server: TemporalServer, namespace: str, provider: dict[str, Any]) -> PayloadCodecConfig:
    """One group serving the blob app on queue `blobs`, with the codec on `provider`; returns the codec config."""
    codec = {"is_enabled": True, "size_threshold": 1_048_576, "storage_prefix": "temporal-payloads/",
             "storage_provider_config": provider}  # fmt: skip
    doc = {
        "pool": {"name": "codec", "app": "blob_app:packs", "app_path": str(APPS), "socket": str(pool.socket),
                 "state_dir": str(pool.directory / "state"), "log_dir": str(pool.directory / "logs")},
        "dev_server": {"enabled": False},
        "workers": {"all": {"scope": "full", "task_queue": "blobs", "replicas": 1}},
        "temporal": {
            "worker_config": {"default_task_queue": "blobs"},
            "payload_codec_config": codec,
            "temporal_config": {
                "temporal_server_configs": {"local": {"target_host": server.address, "namespace": namespace}}
            },
        },
    }  # fmt: skip
    pool.topology.write_text(tomlkit.dumps(doc))
    return PayloadCodecConfig.model_validate(codec)


async def activity_result_payload(client: Client, workflow_id: str) -> Payload:
    for event in await history(client, workflow_id):
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            (payload,) = event.activity_task_completed_event_attributes.result.payloads
            return payload
    raise AssertionError(f"no completed activity in {workflow_id}")


class PipelexFormatEncoder(PayloadCodec):
    """Encodes as Pipelex's StoragePayloadCodec does, written from its format for this test: the serialized payload
    under <prefix><user_id>/<pipeline_run_id>/<sha256> (a job_metadata input), a binary/storage-ref reference."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.keys: list[str] = []

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        out = []
        for payload in payloads:
            raw = payload.SerializeToString()
            if len(raw) < 1_048_576:
                out.append(payload)
                continue
            job = json.loads(payload.data)["job_metadata"]
            key = f"temporal-payloads/{job['user_id']}/{job['pipeline_run_id']}/{sha256(raw).hexdigest()}"
            (self.root / key).parent.mkdir(parents=True, exist_ok=True)
            (self.root / key).write_bytes(raw)
            self.keys.append(key)
            out.append(Payload(metadata={"encoding": b"binary/storage-ref"}, data=b"pipelex-storage://" + key.encode()))
        return out

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return list(payloads)


async def test_large_payloads_go_to_local_storage_and_history_holds_a_reference(
    pool: Pool, temporal_server: TemporalServer, namespace: str, client: Client
) -> None:
    store = pool.directory / "payload-store"
    codec = codec_topology(pool, temporal_server, namespace, {"method": "local",
                           "local": {"uri_format": "{hash}", "local_storage_path": str(store)}})  # fmt: skip
    pool.up()
    pool.wait_all_ready()
    coded = await Client.connect(temporal_server.address, namespace=namespace, data_converter=data_converter(codec))
    workflow_id = f"blob-{uuid.uuid4()}"
    length = await coded.execute_workflow("MakeBlob", TWO_MIB, id=workflow_id, task_queue="blobs", result_type=int)
    assert length == TWO_MIB

    reference = await activity_result_payload(client, workflow_id)  # `client` has no codec: Temporal's raw view
    assert reference.metadata["encoding"] == b"binary/storage-ref"
    assert reference.data.startswith(SCHEME + b"temporal-payloads/") and len(reference.data) < 200
    key = reference.data[len(SCHEME) :].decode()
    stored = (store / key).read_bytes()
    assert sha256(stored).hexdigest() == key.rsplit("/", 1)[1]  # content-addressed, as Pipelex keys it
    original = Payload()
    original.ParseFromString(stored)
    assert original.metadata["encoding"] == b"json/plain" and len(json.loads(original.data)) == TWO_MIB

    # a Pipelex client's input, offloaded by Pipelex's format: the pool's workers read it
    encoder = PipelexFormatEncoder(store)
    pipelex_client = await Client.connect(
        temporal_server.address, namespace=namespace, data_converter=DataConverter(payload_codec=encoder)
    )
    document = {"text": "y" * 1_500_000, "job_metadata": {"user_id": "u1", "pipeline_run_id": "run-7"}}
    measured = await pipelex_client.execute_workflow(
        "Measure", document, id=f"measure-{uuid.uuid4()}", task_queue="blobs", result_type=int
    )
    assert measured == 1_500_000
    assert encoder.keys and encoder.keys[0].startswith("temporal-payloads/u1/run-7/")


@pytest.fixture
def s3_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A local S3-compatible server (moto), its endpoint and test credentials in this process's environment."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
                       "AWS_DEFAULT_REGION": "eu-west-3"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    try:
        yield endpoint
    finally:
        server.stop()


async def test_large_payloads_go_to_s3(
    pool: Pool, temporal_server: TemporalServer, namespace: str, client: Client, s3_server: str
) -> None:
    import boto3

    s3 = boto3.client("s3", region_name="eu-west-3")
    s3.create_bucket(Bucket="payloads", CreateBucketConfiguration={"LocationConstraint": "eu-west-3"})
    provider = {"method": "s3", "s3": {"uri_format": "{hash}", "bucket_name": "payloads", "region": "eu-west-3"}}
    codec = codec_topology(pool, temporal_server, namespace, provider)
    pool.up()  # with this process's environment: the endpoint and credentials of the S3 server
    pool.wait_all_ready()
    coded = await Client.connect(temporal_server.address, namespace=namespace, data_converter=data_converter(codec))
    workflow_id = f"blob-{uuid.uuid4()}"
    assert await coded.execute_workflow("MakeBlob", TWO_MIB, id=workflow_id, task_queue="blobs", result_type=int)
    reference = await activity_result_payload(client, workflow_id)
    key = reference.data[len(SCHEME) :].decode()
    stored = s3.get_object(Bucket="payloads", Key=key)["Body"].read()
    assert sha256(stored).hexdigest() == key.rsplit("/", 1)[1]

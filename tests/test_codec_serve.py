"""`pipelex-pool codec serve`: the codec endpoint Temporal's Web UI calls turns a payload reference from history
back into the payload, with CORS for the UI's origin; a malformed request gets a clear 400."""

from __future__ import annotations

import base64
import json
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import anyio
from temporalio.api.common.v1 import Payload

from pipelex_pool.temporal.codec import LocalStore, StoragePayloadCodec
from tests.conftest import Processes, free_port
from tests.pool import cli_args
from tests.topologies import write_topology


def post(url: str, body: bytes, origin: str) -> tuple[int, dict[str, Any], str | None]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json", "Origin": origin})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read()), response.headers.get("Access-Control-Allow-Origin")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read()), None


def test_the_codec_endpoint_decodes_a_reference_for_the_web_ui(processes: Processes, tmp_path: Path) -> None:
    store = tmp_path / "store"
    codec = "temporal.payload_codec_config"
    topology = write_topology(
        tmp_path,
        {f"{codec}.is_enabled": True,
         f"{codec}.storage_provider_config.local": {"uri_format": "{hash}", "local_storage_path": str(store)}},
    )  # fmt: skip
    original = Payload(metadata={"encoding": b"json/plain"}, data=json.dumps("z" * 2_000_000).encode())
    (reference,) = anyio.run(StoragePayloadCodec(LocalStore(store), 1_048_576, "temporal-payloads/").encode, [original])
    assert reference.metadata["encoding"] == b"binary/storage-ref"

    port = free_port()
    processes.spawn(cli_args("codec", "serve", "-c", str(topology), "--listen", f"127.0.0.1:{port}"), name="codec")
    deadline = time.monotonic() + 60
    while True:  # until it listens (a hang guard, not a synchronisation)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            assert time.monotonic() < deadline, "codec serve never listened"
            time.sleep(0.1)

    def b64(data: bytes) -> str:
        return base64.b64encode(data).decode()

    ref = {"metadata": {"encoding": b64(b"binary/storage-ref")}, "data": b64(reference.data)}
    body = json.dumps({"payloads": [ref]})
    status, answer, cors = post(f"http://127.0.0.1:{port}/decode", body.encode(), "http://localhost:8233")
    assert status == 200 and cors == "http://localhost:8233"
    (decoded,) = answer["payloads"]
    assert base64.b64decode(decoded["metadata"]["encoding"]) == b"json/plain"
    assert base64.b64decode(decoded["data"]) == original.data

    status, answer, _ = post(f"http://127.0.0.1:{port}/decode", b"not json", "http://localhost:8233")
    assert status == 400 and "Payloads" in str(answer["error"])

"""`pipelex-pool codec serve`: the codec endpoint Temporal's Web UI (and `temporal --codec-endpoint`) calls to show
offloaded payloads as what they are.

The protocol is Temporal's remote codec: POST /decode (or /encode) with the JSON form of `Payloads`
(`{"payloads": [{"metadata": {"encoding": "<base64>"}, "data": "<base64>"}]}`), answered in the same form. The
Web UI calls it from the browser, so the answer carries CORS headers for the UI's origin. Bound to loopback by
default: it reads the payload store, so whoever reaches it reads the payloads.
"""

from __future__ import annotations

import asyncio
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog
from google.protobuf import json_format
from temporalio.api.common.v1 import Payloads
from temporalio.converter import PayloadCodec

log = structlog.get_logger("pipelex_pool.codec")
MAX_BODY = 64 * 2**20  # a request of payload references (or of payloads to encode), not a bulk upload


class CodecServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], codec: PayloadCodec, cors_origins: list[str]) -> None:
        self.codec, self.cors_origins = codec, cors_origins
        super().__init__(address, CodecHandler)


class CodecHandler(BaseHTTPRequestHandler):
    server: CodecServer

    def do_OPTIONS(self) -> None:  # noqa: N802 (http.server's naming)
        self._answer(200, b"")

    def do_POST(self) -> None:  # noqa: N802
        operation = self.path.rstrip("/").rsplit("/", 1)[-1]
        if operation not in ("decode", "encode"):
            self._answer(404, _error(f"unknown path {self.path!r}: POST /decode or /encode"))
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0 or length > MAX_BODY:
            self._answer(400, _error(f"a body of 1 to {MAX_BODY} bytes is required"))
            return
        try:
            request = json_format.Parse(self.rfile.read(length), Payloads())
            codec = self.server.codec
            run = codec.decode if operation == "decode" else codec.encode
            result = asyncio.run(run(list(request.payloads)))
        except (json_format.ParseError, UnicodeDecodeError) as exc:
            self._answer(400, _error(f"not the JSON form of Payloads: {exc}"))
            return
        except Exception as exc:  # the store cannot give the payload: say which, keep serving
            log.warning("codec.failed", operation=operation, error=str(exc))
            self._answer(500, _error(f"{type(exc).__name__}: {exc}"))
            return
        self._answer(200, json_format.MessageToJson(Payloads(payloads=result)).encode())

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        origin = self.headers.get("Origin")
        if origin and ("*" in self.server.cors_origins or origin in self.server.cors_origins):
            self.send_header("Access-Control-Allow-Origin", origin)
            self.send_header("Access-Control-Allow-Methods", "POST, OPTIONS")
            self.send_header("Access-Control-Allow-Headers", "Content-Type, X-Namespace, Authorization")
            self.send_header("Access-Control-Allow-Credentials", "true")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("codec.request", line=format % args)


def _error(message: str) -> bytes:
    return json.dumps({"error": message}).encode()

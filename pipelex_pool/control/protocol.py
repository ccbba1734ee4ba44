"""The control protocol: one JSON object per line, at most 1 MiB.

Request  {"id": <any>, "cmd": "status", "args": {...}}
Response {"id": <same>, "ok": true, "result": ...} or {"id": <same>, "ok": false, "error": {"code", "message"}}
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pipelex_pool.errors import ErrorCode, ProtocolError

PROTOCOL_VERSION = 1
MAX_FRAME = 1 << 20


@dataclass(frozen=True)
class Request:
    id: Any
    cmd: str
    args: dict[str, Any] = field(default_factory=dict)


def decode_request(line: bytes) -> Request:
    """Parse one frame (without its newline); raises ProtocolError for anything malformed."""
    try:
        data = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"malformed frame: not a JSON object ({exc})") from exc
    if not isinstance(data, dict):
        raise ProtocolError("malformed frame: a request is a JSON object")
    cmd = data.get("cmd")
    if not isinstance(cmd, str):
        raise ProtocolError('malformed frame: "cmd" must be a string')
    args = data.get("args", {})
    if not isinstance(args, dict):
        raise ProtocolError('malformed frame: "args" must be an object')
    return Request(id=data.get("id"), cmd=cmd, args=args)


def encode(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), default=str).encode() + b"\n"


def ok(request_id: Any, result: Any) -> bytes:
    return encode({"id": request_id, "ok": True, "result": result})


def error(request_id: Any, code: ErrorCode, message: str) -> bytes:
    return encode({"id": request_id, "ok": False, "error": {"code": code.value, "message": message}})

"""The control protocol: one JSON object per line, at most 1 MiB.

Request  {"id": <any>, "cmd": "status", "args": {...}}
Response {"id": <same>, "ok": true, "result": ...} or {"id": <same>, "ok": false, "error": {"code", "message"}}
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from pipelex_pool.errors import ErrorCode, ProtocolError

PROTOCOL_VERSION = 1
MAX_FRAME = 1 << 20
MAX_DEPTH = 32  # nesting of arrays and objects in a request: commands take flat arguments


@dataclass(frozen=True)
class Request:
    id: Any
    cmd: str
    args: dict[str, Any] = field(default_factory=dict)


def decode_request(line: bytes) -> Request:
    """Parse one frame (without its newline); raises ProtocolError for anything malformed."""
    if nesting(line) > MAX_DEPTH:
        raise ProtocolError(f"malformed frame: nested deeper than {MAX_DEPTH} levels")
    try:
        data = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ProtocolError(f"malformed frame: not a JSON object ({type(exc).__name__}: {exc})") from exc
    if not isinstance(data, dict):
        raise ProtocolError("malformed frame: a request is a JSON object")
    cmd = data.get("cmd")
    if not isinstance(cmd, str):
        raise ProtocolError('malformed frame: "cmd" must be a string')
    args = data.get("args", {})
    if not isinstance(args, dict):
        raise ProtocolError('malformed frame: "args" must be an object')
    return Request(id=data.get("id"), cmd=cmd, args=args)


_STRUCTURE = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def nesting(line: bytes) -> int:
    """The deepest nesting of arrays and objects in a JSON text, outside strings (a bound checked before parsing,
    so no frame can make the decoder recurse deeply)."""
    depth = deepest = 0
    for match in _STRUCTURE.finditer(line):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        elif token in (b"]", b"}"):
            depth -= 1
    return deepest


def encode(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), default=str).encode() + b"\n"


def ok(request_id: Any, result: Any) -> bytes:
    return encode({"id": request_id, "ok": True, "result": result})


def error(request_id: Any, code: ErrorCode, message: str) -> bytes:
    return encode({"id": request_id, "ok": False, "error": {"code": code.value, "message": message}})

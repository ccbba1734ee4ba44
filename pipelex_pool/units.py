"""Durations and sizes as topology files write them.

Durations: the Pipelex form "H:MM:SS" (also "M:SS" and fractional seconds, "0:00:00.5") and the short form
"500ms", "30s", "5m", "1h", "1d", combinable as "1m30s". A bare number is seconds.
Sizes: "512MiB", "1GiB", "800MB", "64KiB", "1024B" or a bare number of bytes. KiB/MiB/GiB/TiB are powers of
1024, KB/MB/GB/TB powers of 1000.
"""

from __future__ import annotations

import re
from datetime import timedelta

_SHORT_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SHORT_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_CLOCK = re.compile(r"^(?:(\d+):)?(\d{1,2}):(\d{1,2}(?:\.\d+)?)$")
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?$", re.IGNORECASE)
_SIZE_UNITS = {
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}

DURATION_HELP = 'write a duration as "H:MM:SS" (e.g. "0:30:00") or "500ms", "30s", "5m", "1h"'
SIZE_HELP = 'write a size as "512MiB", "1GiB", "800MB" or a number of bytes'


def parse_duration(value: object) -> timedelta:
    """Parse a duration in either form; raises ValueError with the accepted forms in the message."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration; {DURATION_HELP}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"{value!r} is negative; a duration is >= 0")
        return timedelta(seconds=value)
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a duration; {DURATION_HELP}")
    text = value.strip()
    clock = _CLOCK.match(text)
    if clock:
        hours, minutes, seconds = clock.group(1), clock.group(2), clock.group(3)
        if int(minutes) >= 60 or float(seconds) >= 60:
            raise ValueError(f"{value!r}: minutes and seconds must be below 60; {DURATION_HELP}")
        return timedelta(hours=int(hours or 0), minutes=int(minutes), seconds=float(seconds))
    parts = _SHORT_PART.findall(text)
    if text and parts and "".join(number + unit for number, unit in parts) == text:
        return timedelta(seconds=sum(float(number) * _SHORT_UNITS[unit] for number, unit in parts))
    raise ValueError(f"{value!r} is not a duration; {DURATION_HELP}")


def format_duration(value: timedelta) -> str:
    """The short form of a duration, e.g. 90 s -> "1m30s", 0.5 s -> "500ms"."""
    total_ms = round(value.total_seconds() * 1000)
    if total_ms == 0:
        return "0s"
    if total_ms % 1000:
        return f"{total_ms}ms" if total_ms < 1000 else f"{total_ms / 1000:g}s"
    seconds = total_ms // 1000
    out = ""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size:
            out += f"{seconds // size}{unit}"
            seconds %= size
    return out


def parse_size(value: object) -> int:
    """Parse a size to bytes; raises ValueError with the accepted forms in the message."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a size; {SIZE_HELP}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"{value!r} is negative; a size is >= 0")
        return value
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a size; {SIZE_HELP}")
    match = _SIZE.match(value.strip())
    if not match:
        raise ValueError(f"{value!r} is not a size; {SIZE_HELP}")
    number, unit = match.group(1), (match.group(2) or "B").upper()
    return int(float(number) * _SIZE_UNITS[unit])


def format_size(num_bytes: int) -> str:
    """A human size in binary units, e.g. 1073741824 -> "1.0GiB"."""
    size = float(num_bytes)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return f"{size:.1f}TiB"


ADDRESS_HELP = 'write an address as "127.0.0.1:9721" (host:port)'
PORT_RANGE_HELP = 'write a port range as "127.0.0.1:9500-9599" (host:first-last)'


def _port(text: str, value: object, help_text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"{value!r}: {text!r} is not a port (1-65535); {help_text}")
    return int(text)


def parse_address(value: object) -> str:
    """Check a "host:port" address; returns it normalized (no host -> 127.0.0.1)."""
    if not isinstance(value, str) or ":" not in value:
        raise ValueError(f"{value!r} is not an address; {ADDRESS_HELP}")
    host, _, port = value.strip().rpartition(":")
    return f"{host or '127.0.0.1'}:{_port(port, value, ADDRESS_HELP)}"


def parse_port_range(value: object) -> str:
    """Check a "host:first-last" port range; returns it normalized (no host -> 127.0.0.1)."""
    if not isinstance(value, str) or ":" not in value or "-" not in value.rpartition(":")[2]:
        raise ValueError(f"{value!r} is not a port range; {PORT_RANGE_HELP}")
    host, _, ports = value.strip().rpartition(":")
    first_text, _, last_text = ports.partition("-")
    first, last = _port(first_text, value, PORT_RANGE_HELP), _port(last_text, value, PORT_RANGE_HELP)
    if first > last:
        raise ValueError(f"{value!r}: the first port is above the last; {PORT_RANGE_HELP}")
    return f"{host or '127.0.0.1'}:{first}-{last}"


def split_port_range(value: str) -> tuple[str, range]:
    """("127.0.0.1", range(9500, 9600)) from a range parse_port_range accepted."""
    host, _, ports = value.rpartition(":")
    first, _, last = ports.partition("-")
    return host, range(int(first), int(last) + 1)

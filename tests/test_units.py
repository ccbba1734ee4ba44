"""Durations and sizes: every documented form parses to the value the docs give."""

from __future__ import annotations

from datetime import timedelta

import pytest

from pipelex_pool.units import (
    format_duration,
    parse_address,
    parse_duration,
    parse_port_range,
    parse_size,
    split_port_range,
)

DURATIONS = [
    ("0:30:00", timedelta(minutes=30)),
    ("1:00:00", timedelta(hours=1)),
    ("0:00:02", timedelta(seconds=2)),
    ("2:00:00", timedelta(hours=2)),
    ("0:05", timedelta(seconds=5)),
    ("0:00:00.5", timedelta(milliseconds=500)),
    ("500ms", timedelta(milliseconds=500)),
    ("30s", timedelta(seconds=30)),
    ("0.5s", timedelta(milliseconds=500)),
    ("5m", timedelta(minutes=5)),
    ("1h", timedelta(hours=1)),
    ("1d", timedelta(days=1)),
    ("1m30s", timedelta(seconds=90)),
    (30, timedelta(seconds=30)),
    (1.5, timedelta(seconds=1.5)),
]


@pytest.mark.parametrize(("text", "expected"), DURATIONS)
def test_duration_forms(text: object, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize(("clock", "short"), [("0:30:00", "30m"), ("1:00:00", "1h"), ("0:00:30", "30s")])
def test_both_duration_forms_agree(clock: str, short: str) -> None:
    assert parse_duration(clock) == parse_duration(short)


@pytest.mark.parametrize("value", [timedelta(milliseconds=500), timedelta(seconds=90), timedelta(hours=26)])
def test_duration_round_trip(value: timedelta) -> None:
    assert parse_duration(format_duration(value)) == value


@pytest.mark.parametrize("bad", ["", "5", "5 parsecs", "1:60:00", "0:00:61", "-5s", "5sec", "h", True, [1]])
def test_bad_durations_say_how_to_write_one(bad: object) -> None:
    if bad == "5":  # a bare number in a string is not accepted: units must be explicit in text
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(bad)
        return
    with pytest.raises(ValueError, match=r"duration"):
        parse_duration(bad)


SIZES = [
    ("512MiB", 512 * 2**20),
    ("1GiB", 2**30),
    ("800MB", 800 * 10**6),
    ("64KiB", 64 * 1024),
    ("1.5GiB", int(1.5 * 2**30)),
    ("2GB", 2 * 10**9),
    ("1024B", 1024),
    ("1024", 1024),
    (4096, 4096),
]


@pytest.mark.parametrize(("text", "expected"), SIZES)
def test_size_forms(text: object, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("bad", ["1GB!", "lots", "1 XiB", "-1", -5, True])
def test_bad_sizes_say_how_to_write_one(bad: object) -> None:
    with pytest.raises(ValueError, match="size|negative"):
        parse_size(bad)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("127.0.0.1:9464", "127.0.0.1:9464"), (":9464", "127.0.0.1:9464"), ("0.0.0.0:80", "0.0.0.0:80")],
)
def test_address_forms(text: str, expected: str) -> None:
    assert parse_address(text) == expected


@pytest.mark.parametrize("bad", ["localhost", "127.0.0.1:", "127.0.0.1:http", "127.0.0.1:70000", 9464])
def test_bad_addresses_say_how_to_write_one(bad: object) -> None:
    with pytest.raises(ValueError, match="host:port"):
        parse_address(bad)


def test_port_ranges() -> None:
    assert split_port_range(parse_port_range(":9500-9503")) == ("127.0.0.1", range(9500, 9504))
    for bad in ["127.0.0.1:9500", "127.0.0.1:9600-9500", "127.0.0.1:a-b", "9500-9600"]:
        with pytest.raises(ValueError, match="first-last"):
            parse_port_range(bad)

"""`pipelex-pool top` against a real pool: the Textual app driven headless at 80x24 (Textual's own test pilot)
follows the pool's stream, shows a replica's detail and scales a group after a confirmation; `top --serve` opened
in a real headless Chromium renders the view (a screenshot) from the pool's stream."""

from __future__ import annotations

import base64
import json
import shutil
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from textual.widgets import DataTable, RichLog, Static

from pipelex_pool.top import model
from pipelex_pool.top.app import Top
from tests import status_doc
from tests.conftest import Processes, TemporalServer, free_port
from tests.pool import Pool, cli_args


async def settle(pilot: Any, predicate: Any, within: float, what: str) -> None:
    deadline = time.monotonic() + within  # a hang guard; the predicate is what is waited for
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        await pilot.pause(0.1)


async def test_top_follows_the_pool_and_scales_a_group_after_asking(
    pool: Pool, temporal_server: TemporalServer, namespace: str
) -> None:
    pool.write(temporal_server, namespace)
    pool.up()
    pool.wait_all_ready()
    app = Top(pool.socket)
    async with app.run_test(size=(80, 24)) as pilot:
        replicas = app.query_one("#replicas", DataTable)
        await settle(pilot, lambda: replicas.row_count == 4, 30, "the 4 replicas in the table")
        # at 80 columns every column of the replica table is on screen, no horizontal scrolling
        assert sum(column.get_render_width(replicas) for column in replicas.columns.values()) <= 80
        queues = app.query_one("#queues", DataTable)
        await settle(pilot, lambda: queues.row_count == 4, 30, "the 4 queue rows")
        assert sum(column.get_render_width(queues) for column in queues.columns.values()) <= 80
        header = str(app.query_one("#header", Static).render())
        assert "testpool" in header and "Temporal OK" in header
        await pilot.press("down")  # llm/0
        await settle(pilot, lambda: app.selected == ("llm", 0), 10, "llm/0 selected")
        detail = str(app.query_one("#detail", Static).render())
        assert "llm/0 pid" in detail and "in flight (0)" in detail and "last lines of" in detail
        await pilot.press("s")
        await pilot.pause()
        await pilot.press("end", "backspace", "backspace", "3", "enter")  # the number asked for (now: 2)
        await pilot.pause()
        await pilot.press("y")  # the confirmation
        await settle(pilot, lambda: replicas.row_count == 5, 60, "the third llm replica in the table")
        events = app.query_one("#events", RichLog)
        await settle(pilot, lambda: any("worker.spawned" in str(line) for line in events.lines), 30, "the event")
        assert pool.status()["groups"]["llm"]["desired"] == 3
        await pilot.press("p")  # pause llm, after asking
        await pilot.pause()
        await pilot.press("y")

        def states() -> set[str]:
            return {str(replicas.get_row_at(n)[3]) for n in range(replicas.row_count)}

        await settle(pilot, lambda: "PAUSED" in states(), 60, "PAUSED in the table")
        assert pool.status()["groups"]["llm"]["paused_by_operator"] is True
        await pilot.press("p")  # the group is paused: p resumes it
        await pilot.pause()
        await pilot.press("y")
        await settle(pilot, lambda: "PAUSED" not in states() and "PAUSING" not in states(), 60, "resumed")
        assert pool.status()["groups"]["llm"]["paused_by_operator"] is False


def test_top_model_draws_trends_and_event_lines() -> None:
    assert model.sparkline([0, 1, 2, 4, 8]) == "▁▁▂▄█"  # scaled to the largest: 1/8 and 0 both the lowest block
    assert model.sparkline([0, 0]) == "▁▁"
    row = model.event_line({"event": "worker.exited", "level": "warning", "timestamp": "2026-12-04T06:00:01Z",
                            "group": "llm", "status": "exit 1"})  # fmt: skip
    assert row == "06:00:01!worker.exited group=llm status=exit 1"
    assert model.event_line({"event": "control.subscribed"}) is None


def chromium() -> str:
    found = shutil.which("chromium") or "/usr/bin/chromium"
    assert Path(found).exists(), "chromium (Debian) is installed by .ci/run"
    return found


def cdp(websocket_url: str, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """One Chrome DevTools Protocol call over the page's websocket (aiohttp, which textual-serve brings)."""
    import asyncio

    import aiohttp

    async def call() -> dict[str, Any]:
        async with aiohttp.ClientSession() as session, session.ws_connect(websocket_url, max_msg_size=0) as ws:
            await ws.send_json({"id": 1, "method": method, "params": params or {}})
            async for message in ws:
                data: dict[str, Any] = json.loads(message.data)
                if data.get("id") == 1:
                    return data
        raise AssertionError(f"no answer to {method}")

    return asyncio.run(call())


@pytest.mark.slow
def test_top_serve_renders_the_view_in_a_real_browser(
    pool: Pool, processes: Processes, temporal_server: TemporalServer, namespace: str, tmp_path: Path
) -> None:
    pool.write(temporal_server, namespace)
    pool.up()
    pool.wait_all_ready()
    port, debug = free_port(), free_port()
    processes.spawn(cli_args("top", "--serve", "--port", str(port), "-c", str(pool.topology)), name="serve")
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60  # hang guards below: each waits for its event
    while True:
        try:
            page = urllib.request.urlopen(url, timeout=2).read().decode()
            break
        except OSError:
            assert time.monotonic() < deadline, "top --serve never answered"
            time.sleep(0.2)
    assert "pipelex-pool top" in page
    browser = processes.spawn(
        [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=800,480",
         f"--remote-debugging-port={debug}", f"--user-data-dir={tmp_path / 'chromium'}", url],
        name="chromium",
    )  # fmt: skip
    # the browser's session runs `top`, which subscribes to the pool: the pool logs it
    events = pool.directory / "logs" / "supervisor.log"
    while events.read_text().count("control.subscribed") < 1:
        assert browser.poll() is None, processes.output(browser)
        assert time.monotonic() < deadline + 60, "the served view never subscribed to the pool"
        time.sleep(0.2)
    while True:
        try:
            targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{debug}/json", timeout=2).read())
            socket_url = next(t["webSocketDebuggerUrl"] for t in targets if t.get("type") == "page")
            break
        except (OSError, StopIteration):
            assert time.monotonic() < deadline + 60, "no debuggable page"
            time.sleep(0.2)
    # the terminal is drawn on a canvas: wait until the page shows a rendered view (many colours: text, table,
    # header, footer), not the blank page it starts as
    colours, png = 0, b""
    while colours < MIN_COLOURS:
        shot = cdp(socket_url, "Page.captureScreenshot", {"format": "png"})
        png = base64.b64decode(shot["result"]["data"])
        colours = len(png_colours(png))
        assert time.monotonic() < deadline + 90, f"the page stayed blank ({colours} colours)"
        time.sleep(0.5)
    (tmp_path / "top-serve.png").write_bytes(png)  # kept for a look: the replicas, queues, detail and events


MIN_COLOURS = 6


def png_colours(png: bytes) -> set[bytes]:
    """The distinct pixel values of an 8-bit RGB(A), non-interlaced PNG (what Chromium's screenshots are)."""
    import struct
    import zlib

    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    pos, idat, width, height, channels = 8, b"", 0, 0, 0
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, data = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour_type = struct.unpack(">IIBB", data[:10])
            assert depth == 8 and colour_type in (2, 6)
            channels = 3 if colour_type == 2 else 4
        elif kind == b"IDAT":
            idat += data
        pos += 12 + length
    raw, stride = zlib.decompress(idat), width * channels
    previous, seen = bytearray(stride), set[bytes]()
    for row in range(height):  # every row is needed: each is filtered against the one above
        start = row * (stride + 1)
        line = bytearray(raw[start + 1 : start + 1 + stride])
        _unfilter(raw[start], line, previous, channels)
        if row % 4 == 0:
            seen.update(bytes(line[i : i + channels]) for i in range(0, stride, channels * 4))
        previous = line
    return seen


def _unfilter(kind: int, line: bytearray, above: bytearray, bpp: int) -> None:
    for i in range(len(line)):
        a = line[i - bpp] if i >= bpp else 0
        b = above[i]
        c = above[i - bpp] if i >= bpp else 0
        if kind == 1:
            line[i] = (line[i] + a) & 0xFF
        elif kind == 2:
            line[i] = (line[i] + b) & 0xFF
        elif kind == 3:
            line[i] = (line[i] + (a + b) // 2) & 0xFF
        elif kind == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF


def test_top_trend_keeps_the_highest_backlog_of_each_step() -> None:
    trends = model.Trends()
    for second, backlog in ((0, 3), (5, 9), (10, 1), (15, 4), (31, 0)):
        status = status_doc.status([], {}, {"llm_q": {"activity": status_doc.queue(backlog)}})
        trends.add(status, now=1000.0 + second)
    assert trends.of("llm_q", "activity") == [9.0, 4.0, 0.0]  # steps of 15 s: max(3, 9, 1), 4, 0

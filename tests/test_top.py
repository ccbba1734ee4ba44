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
        header = str(app.query_one("#header", Static).render())
        assert "testpool" in header and "Temporal OK" in header
        await pilot.press("down")  # llm/0
        await settle(pilot, lambda: app.selected == ("llm", 0), 10, "llm/0 selected")
        detail = str(app.query_one("#detail", Static).render())
        assert "llm/0 pid" in detail and "in flight (0)" in detail and "last lines of" in detail
        await pilot.press("s")
        await pilot.pause()
        await pilot.press("ctrl+a", "backspace", "backspace", "3", "enter")  # the number asked for
        await pilot.pause()
        await pilot.press("y")  # the confirmation
        await settle(pilot, lambda: replicas.row_count == 5, 60, "the third llm replica in the table")
        events = app.query_one("#events", RichLog)
        await settle(pilot, lambda: any("worker.spawned" in str(line) for line in events.lines), 30, "the event")
        assert pool.status()["groups"]["llm"]["desired"] == 3


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
        [chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,800",
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
    text = ""
    while "READY" not in text:  # the terminal's rows, as the page's DOM holds them
        answer = cdp(socket_url, "Runtime.evaluate", {"expression": "document.body.innerText"})
        text = answer["result"]["result"].get("value", "")
        assert time.monotonic() < deadline + 90, f"the page never showed the replicas: {text[:500]!r}"
        time.sleep(0.5)
    assert "testpool" in text and "llm" in text
    shot = cdp(socket_url, "Page.captureScreenshot", {"format": "png"})
    png = base64.b64decode(shot["result"]["data"])
    (tmp_path / "top-serve.png").write_bytes(png)
    assert png.startswith(b"\x89PNG") and len(png) > 10_000

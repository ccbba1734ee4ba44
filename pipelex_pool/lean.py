"""What the long-running processes (the supervisor, its fork server, a worker) leave unloaded."""

from __future__ import annotations

import sys


def import_structlog_without_rich() -> None:
    """structlog imports rich, when it is installed (textual brings it, for `top`), to pretty-print tracebacks on a
    console: several MiB and 0.05 s more in the supervisor, its fork server and every exec'd worker, which log plain
    lines. Called first thing by those processes: structlog is imported with rich hidden (it then prints tracebacks
    as Python does); whatever needs rich later (`top`) imports it as usual. The CLI's other commands import neither."""
    if "structlog" in sys.modules or "rich" in sys.modules:
        return
    sys.modules["rich"] = None  # type: ignore[assignment]  # (an import of it now raises ImportError)
    try:
        import structlog  # noqa: F401
    finally:
        del sys.modules["rich"]

"""pipelex-pool: a supervisor daemon for pools of Temporal worker processes on one machine."""

from __future__ import annotations

import sys

__version__ = "0.1.0"


def _import_structlog_without_rich() -> None:
    """structlog imports rich, when it is installed (textual brings it, for `top`), to pretty-print tracebacks on a
    console: 10 MiB and 0.1 s more in the supervisor, its fork server and every exec'd worker, which log plain
    lines. So structlog is imported with rich hidden (it then prints tracebacks as Python does); whatever needs
    rich later (`top`) imports it as usual."""
    if "structlog" in sys.modules or "rich" in sys.modules:
        return
    sys.modules["rich"] = None  # type: ignore[assignment]  # (an import of it now raises ImportError)
    try:
        import structlog  # noqa: F401
    finally:
        del sys.modules["rich"]


_import_structlog_without_rich()

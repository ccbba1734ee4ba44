"""pipelex-pool: a supervisor daemon for pools of Temporal worker processes on one machine."""

from __future__ import annotations

__version__ = "0.1.0"

"""'Did you mean ...?' for names typed by hand."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(name: str, candidates: Iterable[str]) -> str | None:
    matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


def did_you_mean(name: str, candidates: Iterable[str], otherwise: str = "") -> str:
    """A fix text: the nearest candidate if there is one, else `otherwise` (or the list of candidates)."""
    options = sorted(set(candidates))
    near = closest(name, options)
    if near is not None:
        return f"Did you mean {near!r}?"
    return otherwise or f"use one of: {', '.join(options) if options else '(none defined)'}."

"""'Did you mean ...?' for names a user typed: experiments, runs, metric keys, aggregates, views."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["did_you_mean"]


def did_you_mean(name: str, known: Iterable[str], *, what: str) -> str:
    """One line saying that `name` is not a known `what`, with up to three close matches
    (``no metric key 'val/accc'; did you mean 'val/acc'?``), or a few known names when none is
    close, or that there are none."""
    names = sorted({str(k) for k in known})
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.6)
    if close:
        return f"no {what} {name!r}; did you mean {' or '.join(map(repr, close))}?"
    if not names:
        return f"no {what} {name!r}; there are none"
    shown = ", ".join(map(repr, names[:8])) + (", ..." if len(names) > 8 else "")
    return f"no {what} {name!r}; known: {shown}"

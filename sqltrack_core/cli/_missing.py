"""The message for a ``sqltrack`` command run without the ``cli`` extra (imports no click)."""

from __future__ import annotations

__all__ = ["MISSING_CLI"]

MISSING_CLI = (
    "the sqltrack command needs click, rich and pandas, which are not all installed; "
    "run: pip install 'sqltrack-core[cli]'"
)

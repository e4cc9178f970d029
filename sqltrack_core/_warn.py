"""Warn once per cause, from any thread, without ever raising into training code."""

from __future__ import annotations

import logging
import threading
import warnings

from .errors import SQLTrackWarning

logger = logging.getLogger("sqltrack")
_seen: set[tuple[object, str]] = set()
_lock = threading.Lock()


def warn_once(owner: object, cause: str, message: str) -> None:
    """Warn with `message` the first time `owner` reports `cause`; log it at debug level always."""
    logger.debug(message)
    with _lock:
        if (owner, cause) in _seen:
            return
        _seen.add((owner, cause))
    try:
        warnings.warn(message, SQLTrackWarning, stacklevel=3)
    except Exception:
        logger.debug("warning filter raised for %r", message, exc_info=True)


def warn(message: str) -> None:
    """Warn with `message` every time (a state change the user should hear of each time it
    happens, such as the database going away or coming back); never raises."""
    logger.debug(message)
    try:
        warnings.warn(message, SQLTrackWarning, stacklevel=3)
    except Exception:
        logger.debug("warning filter raised for %r", message, exc_info=True)

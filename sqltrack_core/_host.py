"""`RunHost`: what a `Run` needs from the `Tracker` that made it.

`runs` depends on this protocol, not on `tracker`, so the two modules import in one direction
only (`tracker` makes `Run`s); a `Tracker` is a `RunHost`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ._backends import Backend
    from ._options import Options
    from ._store import ColumnRegistry

__all__ = ["RunHost"]


class RunHost(Protocol):
    """The tracker of a run, as the run uses it: options, connections, run lookups."""

    @property
    def url(self) -> str: ...

    @property
    def registry(self) -> ColumnRegistry: ...

    @property
    def _open_url(self) -> str: ...  # the URL connections open (a SQLite path made absolute)

    @property
    def _lock(self) -> AbstractContextManager[Any]: ...  # held around the reader connection

    @property
    def options(self) -> Options: ...

    @property
    def backend(self) -> Backend: ...

    def _open_backend(self) -> Backend: ...

    def _release_backend(self, backend: Backend) -> None: ...

    def run_id(self, ref: Any) -> int: ...

    def run_uuid(self, ref: Any) -> str: ...

    def close(self) -> None: ...

"""``python -m sqltrack_core``: the same as the ``sqltrack`` command."""

from __future__ import annotations

from .cli import main

if __name__ == "__main__":
    main()

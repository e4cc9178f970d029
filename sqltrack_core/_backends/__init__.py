"""Database backends: one small interface, with every dialect difference behind it."""

from __future__ import annotations

from .base import Backend, MetricBatch, open_backend

__all__ = ["Backend", "MetricBatch", "open_backend"]

"""The one clock of the platform: timezone-aware UTC, as every table and answer stores time."""

from __future__ import annotations

from datetime import UTC, datetime


def now_utc() -> datetime:
    return datetime.now(UTC)

"""Services.start(): what a process has after start-up."""

from __future__ import annotations

import gc
from pathlib import Path

from diffusiond.config import Settings
from diffusiond.services import build_services


def test_start_puts_the_startup_heap_beyond_full_collections(tmp_path: Path) -> None:
    services = build_services(Settings(home=tmp_path, executor="none"), with_workers=False)
    services.start()
    try:
        # The imports and start-up state (SQLAlchemy, FastAPI, pydantic: well over 50,000 objects)
        # are frozen, so a full collection no longer walks them while requests wait.
        assert gc.get_freeze_count() > 50_000
        before = gc.get_freeze_count()
        # A second start in one process freezes nothing more. The count may drop: frozen objects
        # can still be freed by reference counting.
        services.start()
        assert gc.get_freeze_count() <= before
    finally:
        services.stop()

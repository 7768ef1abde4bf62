"""Alembic migrations build exactly the schema the table models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from diffusiond.store.database import Database
from diffusiond.store.tables import Base
from tests.backends import database_url


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_migrated_schema_matches_the_models(kind: str, tmp_path: Path) -> None:
    with database_url(kind, tmp_path) as url:
        db = Database(url)
        db.migrate()
        db.migrate()  # idempotent: a restart migrates nothing
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        db.dispose()
    assert diff == []

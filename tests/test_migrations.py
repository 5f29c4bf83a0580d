"""The schema comes only from Alembic: the migrated database matches the models, and migrations go
down and up again on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from cellfactory.core.db import create_engine
from cellfactory.migrations import downgrade, upgrade
from cellfactory.models import metadata
from tests.conftest import fresh_database


def _differences(url: str) -> list:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return compare_metadata(context, metadata)
    finally:
        engine.dispose()


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_migrated_schema_matches_the_models():
    with fresh_database() as url:
        assert _differences(url) == []


def test_downgrade_to_base_and_upgrade_again():
    with fresh_database() as url:
        tables = _tables(url)
        assert {"audit_entry", "app_user", "site", "signature"} <= tables
        downgrade(url, "base")
        assert _tables(url) <= {"alembic_version"}
        upgrade(url)
        assert _tables(url) == tables
        assert _differences(url) == []

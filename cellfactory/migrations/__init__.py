"""Alembic migrations: the only way the schema is created or changed."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig

MIGRATIONS_DIR = Path(__file__).resolve().parent


def alembic_config(database_url: str) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    cfg.set_main_option("file_template", "%%(year)d%%(month).2d%%(day).2d_%%(hour).2d%%(minute).2d_%%(rev)s_%%(slug)s")
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)
    _ensure_append_only(database_url)


def _ensure_append_only(database_url: str) -> None:
    """The append-only triggers of migration 0018, again: SQLite loses a table's triggers when a later
    migration rebuilds the table (batch mode), so they are checked after every upgrade."""
    import sqlalchemy as sa

    from cellfactory.audit.protection import ensure_triggers
    from cellfactory.core.db import create_engine

    engine = create_engine(database_url)
    try:
        with engine.begin() as connection:
            if sa.inspect(connection).has_table("audit_chain_seal"):  # at revision 0018 or later
                ensure_triggers(connection)
    finally:
        engine.dispose()


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)

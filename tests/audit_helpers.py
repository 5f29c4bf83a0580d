"""Tampering with the audit trail as someone who has the database (the owner role, or the SQLite file)."""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from cellfactory.audit import protection


def drop_protection(connection: sa.Connection, tables: Iterable[str] = tuple(protection.APPEND_ONLY)) -> None:
    """What an attacker with the database does first: turn the append-only triggers off."""
    for table in tables:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        else:
            for statement in protection.sqlite_drop_statements(table):
                connection.exec_driver_sql(statement)


def restore_protection(connection: sa.Connection, tables: Iterable[str] = tuple(protection.APPEND_ONLY)) -> None:
    for table in tables:
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"ALTER TABLE {table} ENABLE TRIGGER USER")
        else:
            for statement in protection.sqlite_trigger_statements(table):
                connection.exec_driver_sql(statement)

"""What the database itself refuses: triggers on the append-only tables, and the runtime role's grants.

The audit trail, the electronic signatures, the release certificates and the seal of the old chain are
written once. On SQLite and PostgreSQL, triggers (created by migration 0018, and again by every
`cellfactory db upgrade`, since SQLite loses a table's triggers when a migration rebuilds it) refuse
UPDATE and DELETE on them; the one update the app makes, completing a new certificate with its PDF in
the transaction that issues it, is allowed once. On PostgreSQL the app servers connect as a runtime role
that owns no table (`cellfactory db grant-runtime`), so it can neither disable nor drop those triggers,
and on these tables it may only SELECT and INSERT.
"""

from __future__ import annotations

import re

import sqlalchemy as sa

# Table -> (SQLite WHEN condition under which an UPDATE is refused, PostgreSQL equivalent); None: always.
APPEND_ONLY: dict[str, tuple[str | None, str | None]] = {
    "audit_entry": (None, None),
    "signature": (None, None),
    # Issued in one transaction: inserted, then completed with its PDF; never changed afterwards.
    "release_certificate": ("OLD.pdf_sha256 <> ''", "OLD.pdf_sha256 <> ''"),
    # Recorded by the migration, sealed once by `cellfactory db upgrade`.
    "audit_chain_seal": ("OLD.mac IS NOT NULL", "OLD.mac IS NOT NULL"),
}
# What the runtime role may update on an append-only table (column privileges on PostgreSQL).
RUNTIME_UPDATABLE_COLUMNS = {"release_certificate": ("pdf", "pdf_sha256")}
# Read-only for the runtime role: written by `cellfactory db upgrade` only.
RUNTIME_READ_ONLY = {"audit_chain_seal", "alembic_version"}


def sqlite_trigger_statements(table: str) -> list[str]:
    when, _ = APPEND_ONLY[table]
    update_when = f" WHEN {when}" if when else ""
    return [
        f"CREATE TRIGGER IF NOT EXISTS {table}_no_update BEFORE UPDATE ON {table}{update_when} "
        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: UPDATE refused'); END",
        f"CREATE TRIGGER IF NOT EXISTS {table}_no_delete BEFORE DELETE ON {table} "
        f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: DELETE refused'); END",
    ]


def sqlite_drop_statements(table: str) -> list[str]:
    return [f"DROP TRIGGER IF EXISTS {table}_no_update", f"DROP TRIGGER IF EXISTS {table}_no_delete"]


PG_FUNCTION = """
CREATE OR REPLACE FUNCTION cellfactory_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP USING ERRCODE = 'insufficient_privilege';
END;
$$ LANGUAGE plpgsql;
"""


def pg_trigger_statements(table: str) -> list[str]:
    """audit_entry keeps its triggers of migration 0001; the other tables get the same protection."""
    if table == "audit_entry":
        return []
    _, when = APPEND_ONLY[table]
    update_when = f" WHEN ({when})" if when else ""
    return [
        f"DROP TRIGGER IF EXISTS {table}_no_update ON {table}",
        f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} FOR EACH ROW{update_when} "
        "EXECUTE FUNCTION cellfactory_append_only()",
        f"DROP TRIGGER IF EXISTS {table}_no_delete ON {table}",
        f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} FOR EACH ROW "
        "EXECUTE FUNCTION cellfactory_append_only()",
        f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}",
        f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} FOR EACH STATEMENT "
        "EXECUTE FUNCTION cellfactory_append_only()",
    ]


def pg_drop_statements(table: str) -> list[str]:
    if table == "audit_entry":
        return []
    return [f"DROP TRIGGER IF EXISTS {table}_{what} ON {table}" for what in ("no_update", "no_delete", "no_truncate")]


def ensure_triggers(connection: sa.Connection) -> None:
    """Create the append-only triggers where they are missing, and turn them on again (idempotent)."""
    if connection.dialect.name == "sqlite":
        for table in APPEND_ONLY:
            for statement in sqlite_trigger_statements(table):
                connection.exec_driver_sql(statement)
    elif connection.dialect.name == "postgresql":
        connection.execute(sa.text(PG_FUNCTION))  # text(): the driver would take its '%' for placeholders
        for table in APPEND_ONLY:
            for statement in pg_trigger_statements(table):
                connection.execute(sa.text(statement))
            connection.exec_driver_sql(f"ALTER TABLE {table} ENABLE TRIGGER USER")  # if someone turned them off


# --- the runtime role on PostgreSQL --------------------------------------------------------------------

_ROLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$-]{0,62}$")


class GrantRefused(Exception):
    pass


def _quote(connection: sa.Connection, name: str) -> str:
    return connection.dialect.identifier_preparer.quote_identifier(name)


def runtime_privileges(table: str) -> list[str]:
    """The privileges statements' privilege lists for one table (the app never deletes a row)."""
    if table in RUNTIME_READ_ONLY:
        return ["SELECT"]
    if table in APPEND_ONLY:
        columns = RUNTIME_UPDATABLE_COLUMNS.get(table)
        return ["SELECT", "INSERT"] + ([f"UPDATE ({', '.join(columns)})"] if columns else [])
    return ["SELECT", "INSERT", "UPDATE"]


def grant_runtime(connection: sa.Connection, role: str) -> list[str]:
    """From the owner role: give `role` what the app needs on every table of the schema and nothing more.

    Returns the statements run. Refuses a role that does not exist, the current role, a superuser and a
    role that owns any of the tables (it could turn the triggers off).
    """
    if connection.dialect.name != "postgresql":
        raise GrantRefused("grant-runtime is for PostgreSQL: on SQLite the app and its database file share one "
                           "operating-system user.")
    if not _ROLE_NAME.match(role):
        raise GrantRefused(f"{role!r} is not a role name.")
    found = connection.execute(sa.text("SELECT rolsuper FROM pg_roles WHERE rolname = :role"), {"role": role}).first()
    if found is None:
        raise GrantRefused(f"Role {role} does not exist: create it first, e.g. "
                           f"CREATE ROLE {role} LOGIN PASSWORD '...';")
    if found.rolsuper:
        raise GrantRefused(f"Role {role} is a superuser: it can do anything, whatever is granted. Use a plain "
                           "LOGIN role.")
    if role == connection.execute(sa.text("SELECT current_user")).scalar_one():
        raise GrantRefused(f"Role {role} is the role running this command (the owner): the runtime role must be "
                           "another one.")
    tables = list(connection.execute(sa.text(
        "SELECT tablename, tableowner FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename")))
    owned = [t.tablename for t in tables if t.tableowner == role]
    if owned:
        raise GrantRefused(f"Role {role} owns {', '.join(owned)}: the runtime role must own no table. Run "
                           "`cellfactory db upgrade` as the owner role.")
    quoted = _quote(connection, role)
    database = _quote(connection, connection.execute(sa.text("SELECT current_database()")).scalar_one())
    schema = _quote(connection, connection.execute(sa.text("SELECT current_schema()")).scalar_one())
    statements = [
        f"GRANT CONNECT ON DATABASE {database} TO {quoted}",
        f"GRANT USAGE ON SCHEMA {schema} TO {quoted}",
        f"REVOKE CREATE ON SCHEMA {schema} FROM {quoted}",
        f"REVOKE CREATE ON SCHEMA {schema} FROM PUBLIC",
    ]
    for table in tables:
        name = _quote(connection, table.tablename)
        statements.append(f"REVOKE ALL ON TABLE {name} FROM {quoted}")
        statements.append(f"GRANT {', '.join(runtime_privileges(table.tablename))} ON TABLE {name} TO {quoted}")
    statements += [
        f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {schema} FROM {quoted}",
        f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA {schema} TO {quoted}",
    ]
    for statement in statements:
        connection.exec_driver_sql(statement)
    return statements

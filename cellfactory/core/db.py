"""Declarative base, reusable column types and engine set-up for SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(sa.types.TypeDecorator):
    """Timezone-aware datetimes stored as UTC; naive values are refused, never guessed."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise TypeError("naive datetime refused: GMP times must carry their time zone")
        value = value.astimezone(dt.UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: dt.datetime | None, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {
        dt.datetime: UTCDateTime(),
        dict[str, Any]: sa.JSON(),
    }


IntPK = Annotated[int, mapped_column(primary_key=True)]
# The largest id an IntPK column holds on every database (PostgreSQL's integer): a larger one names no record.
ID_MAX = 2**31 - 1
Str20 = Annotated[str, mapped_column(sa.String(20))]
Str64 = Annotated[str, mapped_column(sa.String(64))]
Str200 = Annotated[str, mapped_column(sa.String(200))]
Text = Annotated[str, mapped_column(sa.Text)]


def enum_column(enum_cls: type, *, type_name: str | None = None, **kwargs: Any) -> Any:
    """Enums are stored as their values in a VARCHAR with a CHECK, portable across databases.

    `type_name` names the CHECK constraint when one table has two columns of the same enum.
    """
    return mapped_column(
        sa.Enum(
            enum_cls,
            native_enum=False,
            create_constraint=True,
            length=40,
            values_callable=lambda members: [m.value for m in members],
            name=type_name or enum_cls.__name__.lower(),
        ),
        **kwargs,
    )


def create_engine(url: str, **kwargs: Any) -> sa.Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, **kwargs)
        _configure_sqlite(engine)
        return engine
    return sa.create_engine(url, pool_pre_ping=True, **kwargs)


def _configure_sqlite(engine: sa.Engine) -> None:
    # pysqlite's own transaction handling breaks SAVEPOINT and hides BEGIN; take it over
    # (SQLAlchemy docs, "Serializable isolation / Savepoints / Transactional DDL").
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, connection_record):  # noqa: ANN001
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection):  # noqa: ANN001
        connection.exec_driver_sql("BEGIN IMMEDIATE")

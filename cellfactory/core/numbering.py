"""Gap-free numbering: batch, deviation, shipment and DIN sequence numbers, per scope (site, year, product).

A sequence is a table with one row per scope and the last number issued in `last_value` (e.g. `BatchSequence`:
site_id, product_id, year). The row is bumped with one atomic UPDATE ... RETURNING, so concurrent callers queue
on its row lock (PostgreSQL) or on the database lock (SQLite) until the first one's transaction ends, and no two
get the same number. The first number of a scope inserts the row (in a savepoint: two first callers at once
collide on the scope's unique constraint, and the loser bumps the winner's row).

The number belongs to the caller's transaction: if that rolls back, so does the bump, and the next caller gets
the same number again. A number is therefore never skipped, and never issued twice once committed.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from cellfactory.extensions import db


def next_number(sequence: type[Any], **scope: Any) -> int:
    """Take the next number of a sequence within the current transaction (1 for a scope's first).

    :param sequence: the mapped sequence table, with a `last_value` column and a unique constraint over the scope
    :param scope: the scope's columns and values, e.g. ``site_id=site.id, year=2026``
    :return: the number, one more than the last one issued in this scope
    """
    table: sa.Table = sequence.__table__
    if not scope:
        raise TypeError("next_number needs the scope of the sequence (e.g. site_id and year)")
    bump = (sa.update(table).where(*(table.c[column] == value for column, value in scope.items()))
            .values(last_value=table.c.last_value + 1).returning(table.c.last_value))
    value = db.session.execute(bump).scalar()
    if value is not None:
        return value
    try:
        with db.session.begin_nested():
            db.session.execute(sa.insert(table).values(**scope, last_value=1))
        return 1
    except sa.exc.IntegrityError:
        return db.session.execute(bump).scalar_one()

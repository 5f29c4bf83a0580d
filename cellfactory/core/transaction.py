"""One transaction per user action: the outermost service call commits once; any exception rolls back.

In a web request the commit waits for the response: the outermost service call releases a savepoint,
and `commit_request` commits when the view (its flash, redirect, serialisation or rendering) has
finished without an error. An error response therefore never follows a commit, and "nothing was saved"
is true. Outside a request (CLI, demo, tests calling services) the outermost call commits at once.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm.exc import StaleDataError

from cellfactory.core.errors import Conflict, DomainError
from cellfactory.core.i18n import _
from cellfactory.extensions import db

P = ParamSpec("P")
R = TypeVar("R")
log = logging.getLogger(__name__)

_DEPTH = "transaction_depth"
_DEFER = "commit_at_end_of_request"
_PENDING = "commit_pending"


def defer_commits(session: sa.orm.Session) -> None:
    """From now on (one web request) the outermost service call leaves the commit to `commit_request`."""
    session.info[_DEFER] = True
    session.info.pop(_PENDING, None)


def commit_soon(session: sa.orm.Session) -> None:
    """Keep bookkeeping written outside a service call (a token's last use): committed with the request's work once
    the response is complete, or at once outside a request."""
    if session.info.get(_DEFER):
        session.info[_PENDING] = True
    else:
        session.commit()


def commit_request(session: sa.orm.Session) -> None:
    """Commit what the request's service calls did; called once the response is complete."""
    session.info.pop(_DEFER, None)
    if session.info.pop(_PENDING, False):
        session.commit()


def transactional(fn: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        session = db.session()
        depth = session.info.get(_DEPTH, 0)
        deferred = depth == 0 and session.info.get(_DEFER, False)
        # A refused call undoes only its own work: earlier calls of the same request stay, as if committed.
        savepoint = session.begin_nested() if deferred else None
        session.info[_DEPTH] = depth + 1
        try:
            result = fn(*args, **kwargs)
            if savepoint is not None:
                session.flush()
                savepoint.commit()
                session.info[_PENDING] = True
            elif depth == 0:
                session.commit()
            else:
                session.flush()
            return result
        except StaleDataError as exc:
            if depth == 0:
                _undo(session, savepoint)
            raise Conflict(_(
                "Someone else saved this record while you were editing it. Reload the page, check their "
                "change and enter yours again."
            )) from exc
        except BaseException as exc:
            if depth == 0:
                _undo(session, savepoint)
                if isinstance(exc, DomainError) and exc.after_rollback:
                    _keep_after_rollback(session, exc)
            raise
        finally:
            session.info[_DEPTH] = depth
            if depth == 0:
                session.info.pop("audit_reason", None)
    return wrapper


def _undo(session: sa.orm.Session, savepoint: sa.orm.SessionTransaction | None) -> None:
    if savepoint is None:
        session.rollback()
        return
    # A failed flush leaves the savepoint inactive but open: it still has to be rolled back.
    transaction = session.get_nested_transaction()
    while transaction is not None and transaction is not savepoint:
        transaction = transaction.parent
    if transaction is savepoint:
        savepoint.rollback()


def _keep_after_rollback(session: sa.orm.Session, exc: DomainError) -> None:
    session.info[_DEPTH] = 1
    try:
        for action in exc.after_rollback:
            action()
        session.commit()
    except Exception:
        session.rollback()
        log.exception("could not record the refused action %r", exc.message)
    finally:
        session.info[_DEPTH] = 0


def serialize_with(key: int) -> None:
    """Make the rest of the current transaction wait for any other transaction that called this with the same `key`
    until that one ends, so a check-then-write cannot interleave. SQLite needs nothing: its write transactions begin
    IMMEDIATE and already run one at a time."""
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))


def lock_records(records: Sequence[Any]) -> None:
    """Hold the rows of `records` until the transaction ends (in id order, so two lists cannot deadlock): a
    transaction that checks them and then writes, such as a signature that must be the only one of its kind on a
    record, makes another one doing the same wait and then see what it wrote. SQLite needs nothing: its write
    transactions begin IMMEDIATE and already run one at a time."""
    if not records or db.session.get_bind().dialect.name != "postgresql":
        return
    by_model: dict[type, set[int]] = {}
    for record in records:
        by_model.setdefault(type(record), set()).add(record.id)
    for model, ids in sorted(by_model.items(), key=lambda item: item[0].__name__):
        db.session.execute(sa.select(model.id).where(model.id.in_(sorted(ids))).order_by(model.id)
                           .with_for_update())


@contextlib.contextmanager
def session_apart(bind: sa.engine.Connection | sa.engine.Engine) -> Iterator[sa.orm.Session]:
    """A session of its own, committed when the block ends without an error: for what is recorded after the
    action's transaction has committed and must not depend on it (the outcome of an alert's e-mail)."""
    with sa.orm.Session(bind=bind, join_transaction_mode="create_savepoint") as session:
        yield session
        session.commit()

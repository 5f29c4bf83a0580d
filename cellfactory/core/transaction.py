"""One transaction per user action: the outermost service call commits once; any exception rolls back."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm.exc import StaleDataError

from cellfactory.core.errors import Conflict, DomainError
from cellfactory.extensions import db

P = ParamSpec("P")
R = TypeVar("R")
log = logging.getLogger(__name__)

_DEPTH = "transaction_depth"


def transactional(fn: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        session = db.session()
        depth = session.info.get(_DEPTH, 0)
        session.info[_DEPTH] = depth + 1
        try:
            result = fn(*args, **kwargs)
            if depth == 0:
                session.commit()
            else:
                session.flush()
            return result
        except StaleDataError as exc:
            if depth == 0:
                session.rollback()
            raise Conflict(
                "Someone else saved this record while you were editing it. Reload the page, check their "
                "change and enter yours again."
            ) from exc
        except BaseException as exc:
            if depth == 0:
                session.rollback()
                if isinstance(exc, DomainError) and exc.after_rollback:
                    _keep_after_rollback(session, exc)
            raise
        finally:
            session.info[_DEPTH] = depth
            if depth == 0:
                session.info.pop("audit_reason", None)
    return wrapper


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

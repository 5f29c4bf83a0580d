"""Site scoping of every lookup: a record of another site is 'not found' to a user without a role there."""

from __future__ import annotations

from typing import Any, TypeVar

import sqlalchemy as sa

from cellfactory.core import permissions
from cellfactory.core.errors import NotFound
from cellfactory.core.i18n import _
from cellfactory.core.roles import Actor as User  # a user as the rules see it (auth.models.User)
from cellfactory.extensions import db

M = TypeVar("M")


def visible_to(query: sa.Select, model: Any, user: User) -> sa.Select:
    """Restrict a query on a site-scoped model to the sites where the user may read GMP data."""
    if not user.has_any_role(permissions.READ_ROLES):
        return query.where(sa.false())
    sites = {r.site_id for r in user.active_roles if r.role in permissions.READ_ROLES}
    if None in sites:
        return query
    return query.where(model.site_id.in_(sites or {-1}))


def get_visible(model: type[M], user: User, *conditions: Any, what: str) -> M:
    obj = db.session.scalar(visible_to(sa.select(model).where(*conditions), model, user))
    if obj is None:
        raise NotFound(_("There is no %(what)s you can see.", what=what))
    return obj

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from cellfactory.core.errors import ValidationFailed
from cellfactory.extensions import db

MAX_PER_PAGE = 200
# Keeps the row offset inside a 64-bit integer: a bigger page number would be a database error (500).
MAX_PAGE = 1_000_000_000


@dataclass
class Page:
    items: list[Any]
    page: int
    per_page: int
    total: int

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    @property
    def has_next(self) -> bool:
        return self.page < self.pages

    @property
    def has_prev(self) -> bool:
        return self.page > 1


def page_args(args: Any, default_per_page: int = 50) -> tuple[int, int]:
    """`?page=&per_page=` checked: whole numbers, page 1..MAX_PAGE, per_page 1..200."""
    fields = {}
    try:
        page = int(args.get("page", 1))
        if not 1 <= page <= MAX_PAGE:
            raise ValueError
    except (TypeError, ValueError):
        fields["page"] = f"Use a whole number from 1 to {MAX_PAGE}."
        page = 1
    try:
        per_page = int(args.get("per_page", default_per_page))
        if not 1 <= per_page <= MAX_PER_PAGE:
            raise ValueError
    except (TypeError, ValueError):
        fields["per_page"] = f"Use a whole number from 1 to {MAX_PER_PAGE}."
        per_page = default_per_page
    if fields:
        raise ValidationFailed("The page parameters are wrong.", fields=fields)
    return page, per_page


def paginate(query: sa.Select, page: int, per_page: int) -> Page:
    total = db.session.scalar(sa.select(sa.func.count()).select_from(query.order_by(None).subquery()))
    items = list(db.session.scalars(query.limit(per_page).offset((page - 1) * per_page)))
    return Page(items, page, per_page, total or 0)

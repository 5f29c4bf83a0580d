from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from cellfactory.core.errors import ValidationFailed
from cellfactory.core.i18n import _
from cellfactory.extensions import db

MAX_PER_PAGE = 200
# Keeps the row offset inside a 64-bit integer: a bigger page number would be a database error (500).
MAX_PAGE = 1_000_000_000


@dataclass
class Page:
    items: list[Any]
    page: int
    per_page: int
    # The number of matching rows; with a bounded count (paginate's count_limit) and total_exact False, a lower
    # bound: there are at least `total` rows, and more than `total - 1`.
    total: int
    total_exact: bool = True
    # Whether a later page has rows, when the page's own read told (a bounded count reads one row more).
    more: bool | None = None

    @property
    def pages(self) -> int | None:
        """The number of pages; None when the total is only a lower bound."""
        if not self.total_exact:
            return None
        return max(1, -(-self.total // self.per_page))

    @property
    def has_next(self) -> bool:
        if self.more is not None:
            return self.more
        return self.page < (self.pages or 0)

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
        fields["page"] = _("Use a whole number from 1 to %(maximum)s.", maximum=MAX_PAGE)
        page = 1
    try:
        per_page = int(args.get("per_page", default_per_page))
        if not 1 <= per_page <= MAX_PER_PAGE:
            raise ValueError
    except (TypeError, ValueError):
        fields["per_page"] = _("Use a whole number from 1 to %(maximum)s.", maximum=MAX_PER_PAGE)
        per_page = default_per_page
    if fields:
        raise ValidationFailed(_("The page parameters are wrong."), fields=fields)
    return page, per_page


def paginate(query: sa.Select, page: int, per_page: int, *, count_limit: int | None = None) -> Page:
    """One page of the query's rows and their total.

    By default the total is an exact count. With `count_limit` (for lists that grow without end, like the audit
    trail) the count stops after `count_limit + 1` rows, so it costs the same at a thousand rows or millions:
    the page reads one row more than it shows to know whether a next page exists, a total up to `count_limit` is
    exact, a larger one is a lower bound (`total_exact` False), and the last page knows its exact total from its
    own position. Every page stays reachable by its number."""
    offset = (page - 1) * per_page
    if count_limit is None:
        total = db.session.scalar(sa.select(sa.func.count()).select_from(query.order_by(None).subquery()))
        items = list(db.session.scalars(query.limit(per_page).offset(offset)))
        return Page(items, page, per_page, total or 0)
    rows = list(db.session.scalars(query.limit(per_page + 1).offset(offset)))
    items, more = rows[:per_page], len(rows) > per_page
    if items and not more:  # the last page: everything before it plus what it shows
        return Page(items, page, per_page, offset + len(items), more=False)
    capped = (query.order_by(None).with_only_columns(sa.literal_column("1"), maintain_column_froms=True)
              .limit(count_limit + 1))
    counted = db.session.scalar(sa.select(sa.func.count()).select_from(capped.subquery())) or 0
    if counted <= count_limit:
        return Page(items, page, per_page, counted, more=more)
    # Rows before a page that shows some exist; a page past the end proves nothing.
    known = offset + len(items) + int(more) if items else 0
    return Page(items, page, per_page, max(counted, known), total_exact=False, more=more)

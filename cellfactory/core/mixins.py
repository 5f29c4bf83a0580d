"""Column groups shared by GMP records."""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from cellfactory.core.clock import utcnow


class Audited:
    """Marks a model whose every insert and update is written to the audit trail at flush.

    `__audit_ignore__` names bookkeeping columns that are not GMP data (lock-out counters);
    `__audit_redact__` names secrets whose change is recorded without the value.
    """

    __audited__: ClassVar[bool] = True
    __audit_ignore__: ClassVar[frozenset[str]] = frozenset()
    __audit_redact__: ClassVar[frozenset[str]] = frozenset()

    def audit_label(self) -> str:
        return str(getattr(self, "id", ""))


class CreatedMixin:
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    @declared_attr
    def created_by_id(cls) -> Mapped[int | None]:  # noqa: N805
        return mapped_column(sa.ForeignKey("app_user.id"), nullable=True)


class VersionedMixin:
    """Optimistic locking: a stale write raises StaleDataError, shown to the user as a conflict."""

    version: Mapped[int] = mapped_column(default=1)

    @declared_attr.directive
    def __mapper_args__(cls) -> dict[str, Any]:  # noqa: N805
        return {"version_id_col": cls.version}

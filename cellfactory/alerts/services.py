"""Alerts to the people who must act: security events to administrators and QA, a failure after release to QA and
the Qualified Persons. Any layer raises them (an account locked, a result out of specification after release), so
they sit in the foundation and name no domain."""

from __future__ import annotations

import logging

import sqlalchemy as sa

from cellfactory.alerts.models import Alert
from cellfactory.audit import services as audit
from cellfactory.core.clock import utcnow
from cellfactory.core.errors import Conflict, PermissionDenied
from cellfactory.core.roles import Actor as User  # a user as the rules see it (auth.models.User)
from cellfactory.core.roles import Role
from cellfactory.core.transaction import transactional
from cellfactory.extensions import db

log = logging.getLogger("cellfactory.alerts")


def raise_alert(kind: str, message: str, *, audiences: set[Role], site_ids: list[int] | None) -> list[Alert]:
    """Add alerts within the caller's transaction: one per audience and site (network-wide when no site)."""
    alerts = []
    for audience in sorted(audiences):
        for site_id in (site_ids or [None]):
            alert = Alert(kind=kind, audience=audience, site_id=site_id, message=message)
            db.session.add(alert)
            alerts.append(alert)
    log.warning("%s: %s", kind, message)
    db.session.flush()
    return alerts


def alert_security(message: str, *, site_ids: list[int] | None) -> list[Alert]:
    return raise_alert("security", message, audiences={Role.ADMIN, Role.QA}, site_ids=site_ids)


def alerts_for(user: User, *, include_acknowledged: bool = False) -> list[Alert]:
    conditions = []
    for assignment in user.active_roles:
        if assignment.site_id is None:
            conditions.append(Alert.audience == assignment.role)
        else:
            conditions.append(sa.and_(Alert.audience == assignment.role,
                                      sa.or_(Alert.site_id == assignment.site_id, Alert.site_id.is_(None))))
    if not conditions:
        return []
    query = sa.select(Alert).where(sa.or_(*conditions))
    if not include_acknowledged:
        query = query.where(Alert.acknowledged_at.is_(None))
    return list(db.session.scalars(query.order_by(Alert.id.desc()).limit(200)))


@transactional
def acknowledge(actor: User, alert: Alert) -> Alert:
    if alert not in alerts_for(actor, include_acknowledged=True):
        raise PermissionDenied("This alert is not addressed to you.")
    if alert.acknowledged_at is not None:
        raise Conflict("This alert was already acknowledged.")
    audit.act_as(db.session, actor, reason="alert acknowledged")
    alert.acknowledged_at = utcnow()
    alert.acknowledged_by_id = actor.id
    return alert

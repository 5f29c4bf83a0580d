"""Alerts to the people who must act: security events to administrators and QA, a failure after release to QA and
the Qualified Persons. Any layer raises them (an account locked, a result out of specification after release), so
they sit in the foundation and name no domain.

When SMTP is configured, an alert also goes by e-mail (`alerts.mail`): the e-mails are written with the alert, in the
transaction that raised it, and sent once that transaction has committed, so a mail server that is down never undoes
nor refuses the GMP record; a failed e-mail is recorded and sent again by `cellfactory alerts send-mail`."""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from flask import current_app, has_app_context
from werkzeug.routing import BuildError

from cellfactory.alerts.models import Alert, AlertMail, MailStatus
from cellfactory.audit import services as audit
from cellfactory.core.clock import utcnow
from cellfactory.core.db import Base
from cellfactory.core.errors import Conflict, PermissionDenied
from cellfactory.core.i18n import N_, _, in_language, language_of
from cellfactory.core.roles import Actor as User  # a user as the rules see it (auth.models.User)
from cellfactory.core.roles import Role
from cellfactory.core.transaction import transactional
from cellfactory.extensions import db

log = logging.getLogger("cellfactory.alerts")


# Who must act on each kind of alert, at the site of the alert (`recipients` names the people). A kind not listed here
# names its audiences itself.
ROUTES: Mapping[str, frozenset[Role]] = {
    "oos": frozenset({Role.QA, Role.QP}),
    "post_release_failure": frozenset({Role.QA, Role.QP}),
    "temperature_excursion": frozenset({Role.QA}),
    "overdue_read": frozenset({Role.QC_ANALYST, Role.QA}),
    "security": frozenset({Role.ADMIN, Role.QA}),
    "em_excursion": frozenset({Role.QA}),
    "recall_open": frozenset({Role.QA}),
    "recall_notice": frozenset({Role.QA}),
}

TITLES: Mapping[str, str] = {
    "oos": N_("Result out of specification"),
    "post_release_failure": N_("Failure after release"),
    "temperature_excursion": N_("Temperature excursion in transit"),
    "overdue_read": N_("Final read overdue"),
    "security": N_("Security event"),
    "em_excursion": N_("Environmental monitoring excursion"),
    "recall_open": N_("Recall open"),
    "recall_notice": N_("Recall notice to acknowledge"),
}


def title_of(kind: str) -> str:
    """The title of a kind of alert, in the language of the moment."""
    return _(TITLES[kind]) if kind in TITLES else kind.replace("_", " ").capitalize()


def raise_alert(kind: str, message: str, *, audiences: set[Role] | frozenset[Role] | None = None,
                site_ids: list[int] | None, link: tuple[str, dict[str, Any]] | None = None,
                subject_key: str | None = None) -> list[Alert]:
    """Add alerts within the caller's transaction: one per audience and site (network-wide when no site), and their
    e-mails when SMTP is configured (sent after the transaction commits).

    :param audiences: the roles alerted; by default those `ROUTES` names for the kind.
    :param link: the endpoint and arguments of the page of the record the alert is about.
    :param subject_key: what the alert is about, when it must be raised only once (`already_alerted`).
    """
    audiences = audiences if audiences is not None else ROUTES[kind]
    path = record_path(*link) if link else None
    alerts = []
    for audience in sorted(audiences):
        for site_id in (site_ids or [None]):
            alert = Alert(kind=kind, audience=audience, site_id=site_id, message=message, link=path,
                          subject_key=subject_key)
            db.session.add(alert)
            alerts.append(alert)
    log.warning("%s: %s", kind, message)
    db.session.flush()
    if has_app_context() and current_app.config["CELLFACTORY"].mail_enabled:
        from cellfactory.alerts import mail

        mail.queue(_mails(alerts))
    return alerts


def already_alerted(kind: str, subject_key: str) -> bool:
    return db.session.scalar(sa.select(Alert.id).where(Alert.kind == kind, Alert.subject_key == subject_key)
                             .limit(1)) is not None


def record_path(endpoint: str, values: dict[str, Any]) -> str | None:
    """The path of a page of this installation, built without a request (a command run by cron has none)."""
    if not has_app_context():
        return None
    try:
        return current_app.url_map.bind("localhost").build(endpoint, values)
    except BuildError:
        log.error("no page %s %r for an alert", endpoint, values)
        return None


@dataclass(frozen=True)
class Recipient:
    user_id: int
    address: str
    full_name: str
    language: str | None = None  # their own choice; None: their site's, else the installation's


def recipients(alert: Alert) -> list[Recipient]:
    """Who is e-mailed an alert: the active users with an e-mail address who hold the alert's role at its site (any
    site for a network-wide alert). A role held network-wide does not make one a recipient of every site's alerts:
    those people see them on the alerts page. The tables are read by name: users sit above alerts in the layers."""
    tables = Base.metadata.tables
    user, assignment = tables["app_user"], tables["role_assignment"]
    query = (sa.select(user.c.id, user.c.email, user.c.full_name, user.c.language)
             .join(assignment, assignment.c.user_id == user.c.id)
             .where(assignment.c.role == alert.audience.value, assignment.c.revoked_at.is_(None),
                    user.c.active.is_(True), user.c.email != "")
             .distinct().order_by(user.c.id))
    if alert.site_id is not None:
        query = query.where(assignment.c.site_id == alert.site_id)
    return [Recipient(row.id, row.email, row.full_name, row.language) for row in db.session.execute(query)]


_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]+")


def _mails(alerts: list[Alert]) -> list[AlertMail]:
    """The e-mails of alerts raised together: one per person, whatever the number of their roles and sites."""
    config = current_app.config["CELLFACTORY"]
    base = config.public_url.rstrip("/")
    mails: dict[int, AlertMail] = {}
    for alert in alerts:
        for person in recipients(alert):
            if person.user_id in mails:
                continue
            site = _site(alert.site_id) if alert.site_id is not None else None
            # Written in the recipient's language (their own, else the alert's site's, else the installation's).
            with in_language(language_of(person, site)):
                subject, body = _compose(alert, site.code if site else None, base)
            mails[person.user_id] = AlertMail(alert_id=alert.id, recipient_id=person.user_id,
                                              address=person.address, subject=subject, body=body,
                                              status=MailStatus.PENDING)
    return list(mails.values())


def _compose(alert: Alert, site: str | None, base: str) -> tuple[str, str]:
    """The subject and body of an alert's e-mail, in the language of the moment."""
    title = title_of(alert.kind)
    where = _("at site %(site)s", site=site) if site else _("network-wide")
    # Short and ASCII: a long or encoded subject is folded, and some mail readers show the folds as spaces. Accented
    # letters lose their accent rather than become '?'.
    subject = _CONTROL.sub(" ", _("[cellfactory] %(title)s %(where)s (alert %(id)s)", title=title, where=where,
                                  id=alert.id))
    subject = "".join(c for c in unicodedata.normalize("NFKD", subject) if not unicodedata.combining(c))
    subject = subject.encode("ascii", "replace").decode()[:120]
    record, alerts_page = f"{base}{alert.link}", f"{base}/alerts/"
    body = "\n".join([
        _("%(title)s %(where)s.", title=title, where=where),
        "",
        alert.message,
        "",
        _("Open the record: %(url)s", url=record) if alert.link else "",
        _("Your alerts: %(url)s", url=alerts_page),
        "",
        _("You receive this e-mail as %(role)s %(where)s (alert %(id)s). Acknowledge the alert in cellfactory; do "
          "not reply to this e-mail.", role=alert.audience.label, where=where, id=alert.id),
    ])
    return subject, body


@dataclass(frozen=True)
class _SiteOfAlert:
    code: str
    language: str | None


def _site(site_id: int) -> _SiteOfAlert:
    site = Base.metadata.tables["site"]
    row = db.session.execute(sa.select(site.c.code, site.c.language).where(site.c.id == site_id)).first()
    return _SiteOfAlert(row.code, row.language) if row else _SiteOfAlert(str(site_id), None)


def mails_of(alert: Alert) -> list[AlertMail]:
    return list(db.session.scalars(sa.select(AlertMail).where(AlertMail.alert_id == alert.id)
                                   .order_by(AlertMail.id)))


def alert_security(message: str, *, site_ids: list[int] | None) -> list[Alert]:
    return raise_alert("security", message, site_ids=site_ids)


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
        raise PermissionDenied(_("This alert is not addressed to you."))
    if alert.acknowledged_at is not None:
        raise Conflict(_("This alert was already acknowledged."))
    audit.act_as(db.session, actor, reason="alert acknowledged")
    alert.acknowledged_at = utcnow()
    alert.acknowledged_by_id = actor.id
    return alert

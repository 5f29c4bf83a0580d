"""Sending the e-mails of alerts (Flask-Mail) after the transaction that raised them has committed.

`queue` adds the e-mails to the caller's transaction; when that transaction commits, `_send_after_commit` sends them
through the SMTP server of the configuration, in a session of its own, and records each outcome on its row. Nothing
here raises: a mail server that is down, slow or refusing leaves the alert and the GMP record as they were committed,
logs the failure and marks the e-mail failed, for `cellfactory alerts send-mail` to send again.
"""

from __future__ import annotations

import datetime as dt
import logging
import smtplib
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from flask import Flask, current_app, has_app_context
from flask_mail import Connection, Mail, Message
from sqlalchemy import event
from sqlalchemy.orm import Session

from cellfactory.alerts.models import AlertMail, MailStatus
from cellfactory.core.clock import utcnow
from cellfactory.core.transaction import session_apart
from cellfactory.extensions import db

log = logging.getLogger("cellfactory.alerts.mail")

_DUE = "alert_mail_due"
# A pending e-mail older than this was not sent after its commit (the process stopped): the command sends it.
STALE_AFTER = dt.timedelta(minutes=5)
# An e-mail that failed this often (a mailbox that does not exist) is no longer tried; the alert stays on its page.
MAX_ATTEMPTS = 20


def init_app(app: Flask) -> None:
    """Register Flask-Mail (its messages read their settings from the app); the SMTP server is the one of the
    configuration at the time of sending (`_connect`)."""
    app.extensions["mail"] = Mail().init_mail(_settings(app.config["CELLFACTORY"]))


def queue(mails: Sequence[AlertMail]) -> None:
    """Add e-mails to the caller's transaction, to be sent when it commits."""
    if not mails:
        return
    db.session.add_all(mails)
    db.session.flush()
    db.session.info.setdefault(_DUE, set()).update(m.id for m in mails)


@event.listens_for(Session, "after_commit")
def _send_after_commit(session: Session) -> None:
    if session.in_nested_transaction() or _DUE not in session.info:
        return  # a savepoint released: nothing is committed yet
    ids = session.info.pop(_DUE)
    if not has_app_context():
        log.error("%d alert e-mails committed outside the application: `cellfactory alerts send-mail` sends them",
                  len(ids))
        return
    deliver(session.get_bind(), sa.and_(AlertMail.id.in_(sorted(ids)), AlertMail.status == MailStatus.PENDING))


@event.listens_for(Session, "after_rollback")
def _forget(session: Session) -> None:
    """A rolled-back transaction wrote no alert: its e-mails are forgotten (a rolled-back savepoint's are not sent
    either: their rows no longer exist)."""
    if not session.in_nested_transaction():
        session.info.pop(_DUE, None)


def send_due() -> tuple[int, int]:
    """Send the e-mails that failed (fewer than `MAX_ATTEMPTS` times), or that stayed pending (the process stopped
    before sending them)."""
    stale = utcnow() - STALE_AFTER
    return deliver(db.session.get_bind(), sa.or_(
        sa.and_(AlertMail.status == MailStatus.FAILED, AlertMail.attempts < MAX_ATTEMPTS),
        sa.and_(AlertMail.status == MailStatus.PENDING, AlertMail.created_at < stale)))


def deliver(bind: Any, which: Any) -> tuple[int, int]:
    """Send the e-mails `which` selects, each outcome recorded on its row, in a session of its own (the caller's
    transaction is over). Returns (sent, failed); never raises."""
    config = current_app.config["CELLFACTORY"]
    if not config.mail_enabled:
        return 0, 0
    sent = failed = 0
    try:
        with session_apart(bind) as session:
            mails = list(session.scalars(sa.select(AlertMail).where(which).order_by(AlertMail.id)))
            if not mails:
                return 0, 0
            now = utcnow()
            for mail in mails:
                mail.attempts += 1
                mail.last_attempt_at = now
            try:
                with _connect(config) as connection:
                    for mail in mails:
                        try:
                            connection.send(Message(subject=mail.subject, recipients=[mail.address],
                                                    body=mail.body, sender=config.mail_sender))
                        except (smtplib.SMTPServerDisconnected, OSError):
                            raise  # the connection is gone: every e-mail not sent yet fails below
                        except Exception as error:  # refused recipient, bad header...: this e-mail only
                            _failed(mail, error)
                            failed += 1
                        else:
                            mail.status, mail.sent_at, mail.error = MailStatus.SENT, utcnow(), None
                            sent += 1
            except (OSError, smtplib.SMTPException) as error:
                # The server is unreachable or hung up: what was not sent yet is failed.
                for mail in mails:
                    if mail.status != MailStatus.SENT:
                        _failed(mail, error)
                failed = sum(1 for m in mails if m.status == MailStatus.FAILED)
    except Exception:
        log.exception("the outcome of alert e-mails could not be recorded")
        return sent, failed
    if failed:
        log.error("%d alert e-mails failed (sent %d): `cellfactory alerts send-mail` sends them again", failed, sent)
    return sent, failed


def _failed(mail: AlertMail, error: Exception) -> None:
    mail.status = MailStatus.FAILED
    mail.error = f"{type(error).__name__}: {error}"[:500]
    log.warning("alert e-mail %s to %s failed: %s", mail.id, mail.address, mail.error)


class _Connection(Connection):
    """Flask-Mail's connection with a timeout (it has none: a hung server would hang the request that committed),
    and STARTTLS or implicit TLS as configured."""

    def __init__(self, mail: Any, timeout: int) -> None:
        super().__init__(mail)
        self.timeout = timeout

    def configure_host(self) -> smtplib.SMTP:
        cls = smtplib.SMTP_SSL if self.mail.use_ssl else smtplib.SMTP
        host = cls(self.mail.server, self.mail.port, timeout=self.timeout)
        if self.mail.use_tls:
            host.starttls()
        if self.mail.username and self.mail.password:
            host.login(self.mail.username, self.mail.password)
        return host


def _settings(config: Any) -> dict[str, Any]:
    return {
        "MAIL_SERVER": config.smtp_host, "MAIL_PORT": config.smtp_port,
        "MAIL_USE_TLS": config.smtp_security == "starttls", "MAIL_USE_SSL": config.smtp_security == "tls",
        "MAIL_USERNAME": config.smtp_user or None, "MAIL_PASSWORD": config.smtp_password or None,
        "MAIL_DEFAULT_SENDER": config.mail_sender or None, "MAIL_SUPPRESS_SEND": not config.mail_enabled,
    }


def _connect(config: Any) -> _Connection:
    return _Connection(Mail().init_mail(_settings(config)), config.smtp_timeout_seconds)

"""Alerts by e-mail: each kind of alert, raised by the real services, is delivered to a real SMTP server (aiosmtpd,
started here on a free local port) addressed to the people who must act at the site of the alert, after the GMP
transaction has committed; no SMTP configured, no e-mail; a mail server that is down leaves the record saved and
the failure recorded, and `cellfactory alerts send-mail` sends it again."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import socket
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller

from cellfactory.alerts.models import Alert, AlertMail, MailStatus
from cellfactory.auth.models import Role, User
from cellfactory.batches import services as batch_services
from cellfactory.batches.models import BatchStatus
from cellfactory.core.clock import local_today, utcnow
from cellfactory.deviations.models import Deviation
from cellfactory.extensions import db
from cellfactory.lifecycle import services as lifecycle
from cellfactory.qc import services as qc
from cellfactory.qc.commands import EnterResult
from cellfactory.qc.judging import Verdict
from cellfactory.qc.models import QcResult
from cellfactory.units import services as units
from cellfactory.units.commands import ReceiveShipment
from cellfactory.units.models import Shipment, ShipmentStatus
from config import Config
from tests.batch_helpers import batch_start, build_plant, iso, run_batch_to_awaiting_qc, start_command, started_long_ago
from tests.conftest import login, make_user, refetch
from tests.post_release_helpers import conditional_with_units, fail_sterility

PUBLIC = "https://cellfactory.example.org"
SENDER = "alerts@cellfactory.example.org"


@dataclass
class Received:
    sender: str
    recipients: list[str]
    message: email.message.EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def body(self) -> str:
        return self.message.get_content().replace("\r\n", "\n")


@dataclass
class Inbox:
    """What the SMTP server received."""

    messages: list[Received] = field(default_factory=list)

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos),
                                      email.message_from_bytes(envelope.original_content or envelope.content,
                                                               policy=email.policy.default)))
        return "250 Message accepted for delivery"

    def to(self, address: str) -> list[Received]:
        return [m for m in self.messages if address in m.recipients]

    @property
    def addresses(self) -> list[str]:
        return sorted(a for m in self.messages for a in m.recipients)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def smtp():
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    try:
        yield controller
    finally:
        controller.stop()


@pytest.fixture
def mail_on(app, smtp, monkeypatch):
    """The app configured to send alerts to the local SMTP server."""
    config: Config = app.config["CELLFACTORY"]
    monkeypatch.setitem(app.config, "CELLFACTORY", config.with_overrides(
        smtp_host="127.0.0.1", smtp_port=smtp.port, mail_sender=SENDER, public_url=PUBLIC, smtp_timeout_seconds=5))
    return smtp.handler


def address(username: str) -> str:
    return f"{username}@example.org"


@pytest.fixture
def plant(users, sites):
    return build_plant(users, sites)


@pytest.fixture
def batch(plant, sites):
    batch = batch_services.start_batch(plant.tech, sites["BG"], start_command(
        sites["BG"], "UCMSC", [plant.material_din], started_at=batch_start()))
    run_batch_to_awaiting_qc(plant, batch)
    started_long_ago(batch)
    return lifecycle.transition(refetch(plant.tech), refetch(batch), BatchStatus.AWAITING_QC, reason="done")


@pytest.fixture
def bystanders(sites):
    """People who must not get BG's QA and QP alerts: QA of MZ, a network-wide QA, a deactivated QA of BG, a QA of BG
    with a revoked role; and one who holds both QA and QP at BG (gets each alert once)."""
    made = {
        "qa_mz": make_user("qa.mz", [(Role.QA, "MZ")]),
        "qa_network": make_user("qa.network", [(Role.QA, None)]),
        "qa_gone": make_user("qa.gone.bg", [(Role.QA, "BG")]),
        "qa_revoked": make_user("qa.revoked.bg", [(Role.QA, "BG"), (Role.TECHNICIAN, "BG")]),
        "qa_qp": make_user("qa.qp.bg", [(Role.QA, "BG"), (Role.QP, "BG")]),
    }
    db.session.execute(sa.update(User).where(User.username == "qa.gone.bg").values(active=False))
    revoked = next(r for r in made["qa_revoked"].roles if r.role == Role.QA)
    db.session.execute(sa.update(type(revoked)).where(type(revoked).id == revoked.id).values(revoked_at=utcnow()))
    db.session.expire_all()
    return made


def enter_oos(plant, batch) -> QcResult:
    return qc.enter_result(refetch(plant.qc), refetch(batch), EnterResult.parse(
        {"test": "CD73", "sample_id": "S-CD73", "sampled_at": iso(1), "value": "94.9"}))


# --- each kind of alert --------------------------------------------------------------------------


def test_an_oos_result_is_mailed_to_qa_and_qp_of_the_batch_site_once_each(mail_on, plant, batch, bystanders):
    result = enter_oos(plant, batch)

    number = refetch(batch).number
    deviation = db.session.get(Deviation, refetch(result).deviation_id)
    # QA of BG: qa.bg, qa.approver.bg (build_plant), qa.qp.bg; QP of BG: qp.bg and qa.qp.bg (once).
    expected = sorted(address(u) for u in ("qa.bg", "qa.approver.bg", "qa.qp.bg", "qp.bg"))
    assert mail_on.addresses == expected
    assert all(len(m.recipients) == 1 for m in mail_on.messages)  # nobody sees who else was told
    mail = mail_on.to(address("qp.bg"))[0]
    assert mail.sender == SENDER and mail.message["From"] == SENDER
    oos = db.session.scalar(sa.select(Alert).where(Alert.kind == "oos", Alert.audience == Role.QP))
    assert mail.subject == f"[cellfactory] Result out of specification at site BG (alert {oos.id})"
    assert (f"CD73+ of batch {number} is out of specification: 94.9 %, below the lower limit ≥ 95 (criterion ≥ 95 %; "
            "sample S-CD73).") in mail.body
    assert f"Deviation {deviation.number} is open" in mail.body
    assert "at site BG" in mail.body
    assert f"Open the record: {PUBLIC}/batches/{number}\n" in mail.body
    assert f"{PUBLIC}/alerts/" in mail.body

    # Each e-mail is recorded on its alert: to whom, when.
    rows = db.session.scalars(sa.select(AlertMail).order_by(AlertMail.address)).all()
    assert [r.address for r in rows] == expected
    assert all(r.status == MailStatus.SENT and r.sent_at is not None and r.attempts == 1 and r.error is None
               for r in rows)
    assert {db.session.get(Alert, r.alert_id).kind for r in rows} == {"oos"}


def test_a_failure_after_release_is_mailed_to_qa_and_qp_of_every_site_concerned(mail_on, users, sites):
    qa_mz = make_user("qa.mz", [(Role.QA, "MZ")])
    qp_mz = make_user("qp.mz", [(Role.QP, "MZ")])
    setup = conditional_with_units(users, sites)
    assert mail_on.messages == []

    fail_sterility(setup["plant"], setup["batch"])

    number = setup["batch"].number
    # BG made the batch and administered a unit; MZ received one and has one in transit.
    expected = sorted(address(u) for u in ("qa.bg", "qa.approver.bg", "qa.reviewer", "qp.bg",
                                           qa_mz.username, qp_mz.username))
    assert mail_on.addresses == expected  # one e-mail each: the failure, not also a plain OOS
    mz = mail_on.to(address("qp.mz"))[0]
    assert mz.subject.startswith("[cellfactory] Failure after release at site MZ (alert ")
    assert f"Sterility of batch {number} (conditionally released) is out of specification after release" in mz.body
    assert "at site MZ" in mz.body
    assert f"Open the record: {PUBLIC}/batches/{number}\n" in mz.body
    # The recipient is named by the pseudonymised code the alert already holds, nothing more.
    assert "PT-BG-0001" in mz.body and "Tester" not in mz.body


def test_a_temperature_excursion_is_mailed_to_qa_of_the_receiving_site(mail_on, users, sites):
    qa_mz = make_user("qa.mz", [(Role.QA, "MZ")])
    qp_mz = make_user("qp.mz", [(Role.QP, "MZ")])
    setup = conditional_with_units(users, sites)
    shipment = db.session.scalar(sa.select(Shipment).where(Shipment.status == ShipmentStatus.IN_TRANSIT))

    units.receive(refetch(users["technician_mz"]), shipment, ReceiveShipment.parse(dict(
        arrived_at=iso(1), temperature_excursion=True, condition="intact")))

    assert mail_on.addresses == [address(qa_mz.username)]  # not QA of BG, not the QP of MZ
    [mail] = mail_on.messages
    assert mail.subject.startswith("[cellfactory] Temperature excursion in transit at site MZ (alert ")
    assert f"Shipment {shipment.number} was received with a temperature excursion in transit." in mail.body
    unit = refetch(setup["units"][1])
    assert f"{unit.identifier} (quarantine)" in mail.body
    assert f"Open the record: {PUBLIC}/shipments/{shipment.number}\n" in mail.body
    assert qp_mz.username not in mail_on.addresses


def _overdue_sterility(plant, batch, *, days_late: int) -> QcResult:
    due = (utcnow() + dt.timedelta(days=30)).date()
    result = qc.enter_result(refetch(plant.qc), refetch(batch), EnterResult.parse(
        {"test": "STER", "sample_id": "S-STER", "sampled_at": iso(2), "pending": True,
         "final_read_due": due.isoformat()}))
    # Test set-up only: the incubation is over and the read was due `days_late` days ago.
    db.session.execute(sa.update(QcResult).where(QcResult.id == result.id)
                       .values(final_read_due=local_today("Europe/Rome") - dt.timedelta(days=days_late)))
    db.session.expire_all()
    return refetch(result)


def test_overdue_final_reads_are_mailed_once_by_the_cron_command(app, mail_on, plant, batch):
    overdue = _overdue_sterility(plant, batch, days_late=2)
    runner = app.test_cli_runner()

    first = runner.invoke(args=["alerts", "send-overdue"])
    assert first.exit_code == 0, first.output
    assert "1 overdue final read(s) newly alerted" in first.output
    number = refetch(batch).number
    # QC analysts of BG (qc_analyst.bg, qc.one.bg, qc.two.bg) and QA of BG (qa.bg, qa.approver.bg).
    expected = sorted(address(u) for u in ("qc_analyst.bg", "qc.one.bg", "qc.two.bg", "qa.bg", "qa.approver.bg"))
    assert mail_on.addresses == expected
    mail = mail_on.to(address("qc.one.bg"))[0]
    assert mail.subject.startswith("[cellfactory] Final read overdue at site BG (alert ")
    due = overdue.final_read_due.isoformat()
    assert f"Sterility on batch {number} (sample S-STER) was due on {due}" in mail.body
    assert f"Open the record: {PUBLIC}/qc/batches/{number}\n" in mail.body

    again = runner.invoke(args=["alerts", "send-overdue"])
    assert again.exit_code == 0, again.output
    assert "0 overdue final read(s) newly alerted" in again.output
    assert len(mail_on.messages) == len(expected)  # mailed once, whatever the number of runs
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Alert).where(Alert.kind == "overdue_read")) == 2


def test_a_read_due_today_is_not_overdue(mail_on, plant, batch):
    _overdue_sterility(plant, batch, days_late=0)
    assert qc.alert_overdue_reads() == []
    assert mail_on.messages == []


def test_an_oos_entered_on_the_page_is_mailed_once_the_request_has_committed(client, mail_on, plant, batch):
    login(client, plant.qc.username)
    sampled = (utcnow() - dt.timedelta(hours=1)).astimezone(ZoneInfo("Europe/Rome")).strftime("%Y-%m-%dT%H:%M")
    number = refetch(batch).number
    page = client.post(f"/qc/batches/{number}/results/new", data={
        "test": "CD73", "sample_id": "S-CD73", "sampled_at": sampled, "value": "94.9", "confirm_oos": "y"})
    assert page.status_code == 302, page.get_data(as_text=True)
    assert mail_on.addresses == sorted(address(u) for u in ("qa.bg", "qa.approver.bg", "qp.bg"))
    db.session.expire_all()
    assert [r.status for r in db.session.scalars(sa.select(AlertMail))] == [MailStatus.SENT] * 3


def test_a_lock_out_is_mailed_to_the_administrators_and_qa_of_the_user_s_site(client, mail_on, users):
    for _ in range(5):  # the lock-out threshold of the test configuration (the default, 5)
        assert login(client, "technician.bg", "Wrong-Password-0000").status_code == 401

    # Administrators of BG: admin.bg; QA of BG: qa.bg. Not admin.mz, not the technician of MZ.
    assert mail_on.addresses == [address("admin.bg"), address("qa.bg")]
    mail = mail_on.to(address("admin.bg"))[0]
    assert mail.subject.startswith("[cellfactory] Security event at site BG (alert ")
    assert "Account technician.bg (Technician.Bg Tester) was locked after 5 failed attempts" in mail.body


# --- without SMTP, and with SMTP down --------------------------------------------------------------


def test_without_smtp_configured_the_alert_is_recorded_and_nothing_is_mailed(app, smtp, plant, batch):
    assert not app.config["CELLFACTORY"].mail_enabled
    result = enter_oos(plant, batch)

    assert refetch(result).verdict == Verdict.FAIL
    assert {a.audience for a in db.session.scalars(sa.select(Alert).where(Alert.kind == "oos"))} == {Role.QA, Role.QP}
    assert db.session.scalar(sa.select(sa.func.count()).select_from(AlertMail)) == 0
    assert smtp.handler.messages == []
    outcome = app.test_cli_runner().invoke(args=["alerts", "send-mail"])
    assert outcome.exit_code == 0 and "No SMTP host configured" in outcome.output


def test_a_mail_server_down_leaves_the_oos_saved_and_the_failure_recorded_for_sending_again(
        app, smtp, mail_on, plant, batch, monkeypatch):
    config = app.config["CELLFACTORY"]
    monkeypatch.setitem(app.config, "CELLFACTORY", config.with_overrides(smtp_port=free_port()))  # nobody listens

    result = enter_oos(plant, batch)

    result = refetch(result)
    assert result.verdict == Verdict.FAIL and result.deviation_id is not None
    assert refetch(batch).status == BatchStatus.ON_HOLD
    rows = db.session.scalars(sa.select(AlertMail).order_by(AlertMail.address)).all()
    assert len(rows) == 3  # qa.bg, qa.approver.bg, qp.bg
    assert all(r.status == MailStatus.FAILED and r.sent_at is None and r.attempts == 1 for r in rows)
    assert all("ConnectionRefusedError" in r.error for r in rows)

    runner = app.test_cli_runner()
    still_down = runner.invoke(args=["alerts", "send-mail"])
    assert still_down.exit_code == 1 and "failed: 3" in still_down.output

    monkeypatch.setitem(app.config, "CELLFACTORY", config)  # the mail server is back
    sent = runner.invoke(args=["alerts", "send-mail"])
    assert sent.exit_code == 0, sent.output
    assert "sent again: 3; failed: 0" in sent.output
    assert mail_on.addresses == sorted(address(u) for u in ("qa.bg", "qa.approver.bg", "qp.bg"))
    db.session.expire_all()
    assert all(r.status == MailStatus.SENT and r.attempts == 3 and r.error is None
               for r in db.session.scalars(sa.select(AlertMail)))
    assert runner.invoke(args=["alerts", "send-mail"]).output.endswith("sent again: 0; failed: 0.\n")


def test_a_refused_recipient_fails_alone(mail_on, plant, batch):
    class Refusing:
        async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
            if address == "qp.bg@example.org":
                return "550 No such mailbox"
            envelope.rcpt_tos.append(address)
            return "250 OK"

    mail_on.handle_RCPT = Refusing().handle_RCPT
    enter_oos(plant, batch)
    rows = {r.address: r for r in db.session.scalars(sa.select(AlertMail))}
    assert rows["qp.bg@example.org"].status == MailStatus.FAILED and "550" in rows["qp.bg@example.org"].error
    assert rows["qa.bg@example.org"].status == MailStatus.SENT
    assert mail_on.addresses == ["qa.approver.bg@example.org", "qa.bg@example.org"]


def test_an_entry_refused_raises_no_alert_and_sends_nothing(mail_on, plant, batch):
    from cellfactory.core.errors import ValidationFailed

    with pytest.raises(ValidationFailed):
        qc.enter_result(refetch(plant.qc), refetch(batch), EnterResult.parse(
            {"test": "CD73", "sample_id": "S-CD73", "sampled_at": iso(1), "value": "94.9"}), confirm_oos=False)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Alert)) == 0
    assert mail_on.messages == []


# --- configuration ---------------------------------------------------------------------------------


def test_the_smtp_configuration_is_checked(tmp_path, monkeypatch):
    for name in ("CELLFACTORY_SMTP_HOST", "CELLFACTORY_SMTP_PASSWORD", "CELLFACTORY_MAIL_SENDER",
                 "CELLFACTORY_SMTP_SECURITY", "CELLFACTORY_SMTP_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert not Config.from_env(tmp_path).mail_enabled
    monkeypatch.setenv("CELLFACTORY_SMTP_HOST", "smtp.example.org")
    with pytest.raises(RuntimeError, match="CELLFACTORY_MAIL_SENDER"):
        Config.from_env(tmp_path)
    for hostile in ("alerts@example.org\r\nBcc: everyone@example.org", "Alerts <alerts@example.org>", "alerts",
                    "alerts@example.org\u202e", "a" * 10_000 + "@example.org"):
        monkeypatch.setenv("CELLFACTORY_MAIL_SENDER", hostile)
        with pytest.raises(RuntimeError, match="CELLFACTORY_MAIL_SENDER must be one e-mail address"):
            Config.from_env(tmp_path)
    monkeypatch.setenv("CELLFACTORY_MAIL_SENDER", SENDER)
    monkeypatch.setenv("CELLFACTORY_SMTP_HOST", "smtp.example.org\nEHLO evil")
    with pytest.raises(RuntimeError, match="CELLFACTORY_SMTP_HOST must be a host name"):
        Config.from_env(tmp_path)
    monkeypatch.setenv("CELLFACTORY_SMTP_HOST", "smtp.example.org")
    monkeypatch.setenv("CELLFACTORY_SMTP_SECURITY", "ssl\u202e")
    with pytest.raises(RuntimeError, match="CELLFACTORY_SMTP_SECURITY must be one of none, starttls, tls"):
        Config.from_env(tmp_path)
    monkeypatch.setenv("CELLFACTORY_SMTP_SECURITY", "starttls")
    monkeypatch.setenv("CELLFACTORY_SMTP_PORT", "70000")
    with pytest.raises(RuntimeError, match="port number"):
        Config.from_env(tmp_path)
    monkeypatch.setenv("CELLFACTORY_SMTP_PORT", "five-eight-seven")
    with pytest.raises(RuntimeError, match="whole number"):
        Config.from_env(tmp_path)
    monkeypatch.setenv("CELLFACTORY_SMTP_PORT", "587")
    (tmp_path / "smtp_password").write_text("s3cret-from-the-instance\n")
    config = Config.from_env(tmp_path)
    assert (config.smtp_host, config.smtp_port, config.smtp_security) == ("smtp.example.org", 587, "starttls")
    assert config.smtp_password == "s3cret-from-the-instance" and "s3cret" not in repr(config)
    monkeypatch.setenv("CELLFACTORY_SMTP_PASSWORD", "from-the-environment")
    assert Config.from_env(tmp_path).smtp_password == "from-the-environment"


def test_the_command_sends_e_mails_left_unsent_and_gives_up_after_twenty_attempts(app, mail_on, plant, batch,
                                                                                 monkeypatch):
    config = app.config["CELLFACTORY"]
    monkeypatch.setitem(app.config, "CELLFACTORY", config.with_overrides(smtp_port=free_port()))  # nobody listens
    enter_oos(plant, batch)
    monkeypatch.setitem(app.config, "CELLFACTORY", config)
    rows = {r.address: r.id for r in db.session.scalars(sa.select(AlertMail))}
    # Set-up: one e-mail was left pending by a process that stopped 10 minutes ago, one failed 20 times already.
    db.session.execute(sa.update(AlertMail).where(AlertMail.id == rows[address("qa.bg")]).values(
        status=MailStatus.PENDING, attempts=0, created_at=utcnow() - dt.timedelta(minutes=10)))
    db.session.execute(sa.update(AlertMail).where(AlertMail.id == rows[address("qp.bg")]).values(attempts=20))

    outcome = app.test_cli_runner().invoke(args=["alerts", "send-mail"])

    assert outcome.exit_code == 0, outcome.output
    assert mail_on.addresses == [address("qa.approver.bg"), address("qa.bg")]
    db.session.expire_all()
    assert db.session.get(AlertMail, rows[address("qp.bg")]).status == MailStatus.FAILED

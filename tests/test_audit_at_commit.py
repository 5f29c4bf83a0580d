"""The chain is appended to when a transaction commits: the lock that serialises appends is held only then, and
the entries of a refused service call go with its savepoint."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from cellfactory.audit import services as audit
from cellfactory.audit.models import AuditEntry
from cellfactory.core.errors import Conflict, ValidationFailed
from cellfactory.core.transaction import commit_request, defer_commits, transactional
from cellfactory.extensions import db
from cellfactory.sites import services as site_services
from cellfactory.sites.commands import UpdateSite
from tests.conftest import refetch


def _site_entries(site_id: int) -> list[AuditEntry]:
    return list(db.session.scalars(sa.select(AuditEntry).where(AuditEntry.entity_type == "site",
                                                               AuditEntry.entity_id == str(site_id))
                                   .order_by(AuditEntry.seq)))


def _rename(admin, site, name: str, reason: str) -> None:
    site_services.update_site(admin, site, UpdateSite(name=name, timezone=site.timezone, address=site.address,
                                                      active=True, reason=reason))


@transactional
def _change_then_refuse(admin, site) -> None:
    audit.act_as(db.session, admin, reason="a change that is refused")
    site.address = "Via del Rifiuto 1"
    db.session.flush()  # the change reached the database, then the call is refused
    raise Conflict("refused after its change was flushed")


def test_entries_wait_for_the_commit_and_a_refused_call_takes_its_own_away(users):
    admin, site = refetch(users["admin"]), site_services.get_site("BG")
    before = len(_site_entries(site.id))
    defer_commits(db.session())  # as in a web request: each service call is a savepoint, the commit comes last

    _rename(admin, site, "Cell Factory Bergamo (ASST)", "official name changed")
    assert len(_site_entries(site.id)) == before  # released savepoint: nothing appended yet
    with pytest.raises(Conflict):
        _change_then_refuse(admin, site)
    commit_request(db.session())

    entries = _site_entries(site.id)[before:]
    assert [(e.action, e.reason, e.changes) for e in entries] == [
        ("update", "official name changed", {"name": ["Cell Factory Bergamo", "Cell Factory Bergamo (ASST)"]})]
    assert refetch(site).address == ""
    seqs = list(db.session.scalars(sa.select(AuditEntry.seq).order_by(AuditEntry.seq)))
    assert seqs == list(range(1, len(seqs) + 1))
    assert audit.verify_chain(db.session.connection()).intact


def test_write_pending_shows_the_transactions_own_entries_once(users):
    admin, site = refetch(users["admin"]), site_services.get_site("BG")
    before = len(_site_entries(site.id))
    defer_commits(db.session())
    _rename(admin, site, "Cell Factory Bergamo (ASST)", "official name changed")

    audit.write_pending(db.session)  # a rule reading the trail in the same transaction sees the change
    assert [e.reason for e in _site_entries(site.id)[before:]] == ["official name changed"]
    commit_request(db.session())
    assert [e.reason for e in _site_entries(site.id)[before:]] == ["official name changed"]
    assert audit.verify_chain(db.session.connection()).intact


@transactional
def _read_the_trail_then_refuse(admin, site) -> None:
    """A rule that reads the trail (as a step's verification does) in a call that is then refused."""
    audit.act_as(db.session, admin, reason="a change that is refused")
    site.address = "Via del Rifiuto 1"
    db.session.flush()
    audit.write_pending(db.session)  # appends the earlier call's entry too, inside this call's savepoint
    raise Conflict("refused after reading the trail")


def test_a_refused_call_that_read_the_trail_keeps_the_entries_of_the_work_before_it(users):
    admin, site = refetch(users["admin"]), site_services.get_site("BG")
    before = len(_site_entries(site.id))
    defer_commits(db.session())
    _rename(admin, site, "Cell Factory Bergamo (ASST)", "official name changed")
    with pytest.raises(Conflict):
        _read_the_trail_then_refuse(admin, site)
    commit_request(db.session())

    # The rename stands, so its entry must too (it was appended inside the refused call's savepoint, and undone
    # with it); the refused change left neither data nor entry.
    assert refetch(site).name == "Cell Factory Bergamo (ASST)" and refetch(site).address == ""
    assert [(e.reason, e.changes) for e in _site_entries(site.id)[before:]] == [
        ("official name changed", {"name": ["Cell Factory Bergamo", "Cell Factory Bergamo (ASST)"]})]
    assert audit.verify_chain(db.session.connection()).intact


@transactional
def _change_without_reason(admin, site) -> None:
    audit.act_as(db.session, admin)
    site.address = "Via senza motivo 1"
    db.session.flush()  # refused in the flush itself: a change after first entry needs a reason


def test_a_call_refused_in_its_flush_keeps_the_entries_of_the_work_before_it(users):
    admin, site = refetch(users["admin"]), site_services.get_site("BG")
    before = len(_site_entries(site.id))
    defer_commits(db.session())
    _rename(admin, site, "Cell Factory Bergamo (ASST)", "official name changed")
    with pytest.raises(ValidationFailed):
        _change_without_reason(admin, site)
    commit_request(db.session())

    assert refetch(site).name == "Cell Factory Bergamo (ASST)" and refetch(site).address == ""
    assert [e.reason for e in _site_entries(site.id)[before:]] == ["official name changed"]
    assert audit.verify_chain(db.session.connection()).intact


def test_a_session_closed_mid_transaction_leaves_nothing_queued(app, users):
    admin, site = refetch(users["admin"]), site_services.get_site("BG")
    session = db.session()
    defer_commits(session)
    _rename(admin, site, "Cell Factory Bergamo (ASST)", "official name changed")
    assert session.info.get("audit_pending")
    session.close()  # rolls back without the soft-rollback event
    assert not session.info.get("audit_pending")

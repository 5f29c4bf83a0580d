"""Records people can read: the history card of a record page and the audit appendix of the PDF batch record
say the same thing in words (labels, enums in words, site-local times, numbers with units; no internal ids or
hashes), auditors can open the technical view, cell counts print as 4.00 × 10⁵ on the page and in the PDF,
and the trace shows times on the site's clock."""

from __future__ import annotations

import datetime as dt
import html
import re

import pytest
import sqlalchemy as sa

from cellfactory.audit import services as audit
from cellfactory.audit.models import AuditEntry
from cellfactory.audit.presentation import ChangeFormatter
from cellfactory.batches import services
from cellfactory.core.clock import utcnow
from cellfactory.extensions import db
from cellfactory.releases import services as releases
from tests.batch_helpers import batch_start, build_plant, passage_data, start_command, step_command, step_data
from tests.conftest import login, pdf_text, refetch

# Tokyo has no daylight saving time: UTC+9 all year, so the local times below are computed by hand.
TOKYO = "Asia/Tokyo"
SEEDED = dt.datetime(2026, 11, 20, 6, 30, tzinfo=dt.UTC)     # 15:30 in Tokyo
HARVESTED = dt.datetime(2026, 11, 23, 22, 15, tzinfo=dt.UTC)  # 07:15 the next day in Tokyo


@pytest.fixture
def plant(users, sites):
    return build_plant(users, sites)


@pytest.fixture
def batch(plant, sites):
    started = services.start_batch(plant.tech, refetch(sites["BG"]),
                                   start_command(refetch(sites["BG"]), "UCMSC", [plant.material_din],
                                                 started_at=batch_start()))
    # The site moves to Tokyo once the batch is started (the intake helpers compute their days in Rome).
    site = refetch(sites["BG"])
    audit.act_as(db.session, None, reason="test site on Tokyo time")
    site.timezone = TOKYO
    db.session.flush()
    return refetch(started)


def _step(batch, code):
    return next(s for s in refetch(batch).steps if s.code == code)


def _with_p0(plant, batch):
    iso = _step(batch, "ISO")
    services.record_step(refetch(plant.tech), iso, step_command(iso, step_data()))
    p0 = _step(batch, "P0")
    data = passage_data(0, 4e5, 3.2e6, 0, 0, seeded_at=SEEDED.isoformat(), harvested_at=HARVESTED.isoformat(),
                        started_at=SEEDED.isoformat(), ended_at=HARVESTED.isoformat())
    services.record_step(refetch(plant.tech), p0, step_command(p0, data))
    return refetch(batch)


def history_card(page: str) -> str:
    start = page.index('id="history"')
    return page[page.rindex("<details", 0, start):page.index("</details>", start)]


def _lines(card: str) -> list[str]:
    """Each change line of a history card as text ('Label: old → new')."""
    return [html.unescape(re.sub(r"<[^>]+>", "", line)).strip()
            for line in re.findall(r'<div><span class="field-label">.*?</div>', card)]


RAW_NAMES = ("cells_seeded", "seeded_at", "created_by_id", "site_id", "step_id", "vessel_type_id", "version",
             "passage_number", "operator_id")


def test_a_step_history_reads_in_words_numbers_and_the_site_time(client, plant, batch):
    batch = _with_p0(plant, batch)
    login(client, "technician.bg")
    for address in (f"/batches/{batch.number}/steps/P0", f"/batches/{batch.number}/steps/P0?history=raw"):
        card = history_card(client.get(address).get_data(as_text=True))
        lines = _lines(card)
        # Typed values, with their units; counts as on the bench; the linked records by name.
        for expected in ("Cells seeded: 4.00 × 10⁵", "Cells harvested: 3.20 × 10⁶", "Viability: 95 %",
                         "Confluence: 85 %", "Growth area: 350 cm²", "Vessels: 2", "Vessel type: T175",
                         "Passage: 0", "Population doublings (PD): 3.00", "Doubling time: 29.2 h",
                         "Seeding density: 1.14 × 10³ cells/cm²", "Equipment: INC-01", "Equipment: BSC-01",
                         "Operator: — → Technician.Bg Tester (technician.bg)", "Status: pending → done",
                         "Counted in cumulative PD: yes"):
            assert expected in lines, (expected, lines)
        # 06:30 and 22:15 UTC are 15:30 and 07:15 (the next day) in Tokyo, the site's zone.
        assert "Seeded: 2026-11-20 15:30 JST" in lines and "Harvested: 2026-11-24 07:15 JST" in lines
        # The step's first entry changed it: what was empty reads '— → value'.
        assert "Started: — → 2026-11-20 15:30 JST" in lines and "Ended: — → 2026-11-24 07:15 JST" in lines
        assert "(Asia/Tokyo)" in card and "(Europe/Rome)" not in card
        # No internal names, ids, UTC instants or machinery: and a technician gets no technical view.
        assert not any(name in card for name in RAW_NAMES), card
        assert "2026-11-20T06:30" not in card and "400000" not in card and "Technical view" not in card


def test_enum_codes_read_as_words(client, plant, batch):
    from cellfactory.equipment import services as equipment_services
    from cellfactory.equipment.commands import ChangeEquipmentStatus
    from cellfactory.equipment.models import Equipment, EquipmentStatus

    incubator = db.session.scalar(sa.select(Equipment).where(Equipment.code == "INC-01"))
    equipment_services.set_status(refetch(plant.qa), incubator, ChangeEquipmentStatus(
        status=EquipmentStatus.OUT_OF_SERVICE, reason="door seal torn"))
    login(client, "technician.bg")
    card = history_card(client.get("/equipment/BG/INC-01").get_data(as_text=True))
    assert "Status: in service → out of service" in _lines(card)
    assert "Calibration due: " + (utcnow().date() + dt.timedelta(days=90)).isoformat() in _lines(card)
    assert "in_service" not in card and "out_of_service" not in card and "door seal torn" in card


def test_auditors_open_the_technical_view_with_every_raw_field(client, plant, batch, users):
    batch = _with_p0(plant, batch)
    login(client, users["auditor_network"].username)
    address = f"/batches/{batch.number}"
    readable = history_card(client.get(address).get_data(as_text=True))
    assert "Cells seeded: 4.00 × 10⁵" in _lines(readable) and "cells_seeded" not in readable
    assert f'href="{address}?history=raw#history"' in readable and "Technical view" in readable
    raw = history_card(client.get(address + "?history=raw").get_data(as_text=True))
    for field, value in (("cells_seeded", "400000"), ("seeded_at", "2026-11-20T06:30:00"),
                         ("created_by_id", str(plant.tech.id)), ("step_id", str(_step(batch, "P0").id))):
        assert re.search(rf'field-name">{field}</span>: <del>—</del> → <ins>{value}', raw), field
    assert f'href="{address}#history"' in raw and "Readable view" in raw
    # Both views list the same entries: the readable one leaves fields out, never an entry.
    passage = db.session.scalar(sa.select(AuditEntry).where(
        AuditEntry.entity_type == "passage", AuditEntry.entity_id == str(_step(batch, "P0").passage.id)))
    assert passage.changes["cells_seeded"] == [None, "400000"]  # stored as it was: only the display differs
    assert raw.count('class="audit-time"') == readable.count('class="audit-time"') > 5


def test_the_pdf_audit_appendix_reads_as_the_page_and_counts_print_alike(client, plant, batch):
    batch = _with_p0(plant, batch)
    p0 = _step(batch, "P0")
    # A correction after first entry: listed in the changes appendix in words.
    services.record_step(refetch(plant.tech), p0, step_command(p0, passage_data(
        0, 4e5, 3.2e6, 0, 0, seeded_at=SEEDED.isoformat(), harvested_at=HARVESTED.isoformat(),
        started_at=SEEDED.isoformat(), ended_at=HARVESTED.isoformat(), viability_pct="92.5"),
        reason="count re-read", expected_version=p0.version))
    pdf = releases.batch_record_pdf(refetch(plant.qa), refetch(batch))
    text = " ".join(pdf_text(pdf).split())
    for expected in ("Cells seeded: 4.00 × 10⁵", "Seeded: 2026-11-20 15:30 JST", "Vessel type: T175",
                     "Viability: 95 % → 92.5 %", "Operator: — → Technician.Bg Tester (technician.bg)"):
        assert expected in text, expected
    assert not any(name in text for name in ("cells_seeded", "created_by_id", "vessel_type_id", "site_id"))
    assert "e+0" not in text and "2026-11-20T06:30" not in text
    # The passage table prints the counts as the batch page shows them.
    login(client, "technician.bg")
    page = html.unescape(client.get(f"/batches/{batch.number}").get_data(as_text=True))
    for count in ("4.00 × 10⁵", "3.20 × 10⁶", "1.14 × 10³"):
        assert count in page and count in text, count
    # The same formatter wrote both: the page's lines are in the PDF, word for word.
    card = _lines(history_card(client.get(f"/batches/{batch.number}/steps/P0").get_data(as_text=True)))
    assert card and all(line in text for line in card if len(line) < 60), [x for x in card if x not in text]


def test_the_formatter_refuses_nothing_and_shows_hostile_text_as_stored():
    formatter = ChangeFormatter()
    hostile = "\u202eevil\u202c" + "x" * 10_000
    lines = formatter.lines("passage", {"observations": [None, hostile], "cells_seeded": [None, "not a number"],
                                         "seeded_at": [None, "2026-13-45T99:00:00"], "status": [None, "no_such"],
                                         "created_by_id": [None, 7]}, TOKYO)
    assert [(line.label, line.new) for line in lines] == [
        ("Cells seeded", "not a number"), ("Observations", hostile), ("Seeded", "2026-13-45T99:00:00"),
        ("Status", "no such")]


def test_the_trace_gives_administration_times_on_the_site_clock_page_and_pdf(client, users, sites):
    from cellfactory.units import services as units
    from cellfactory.units.commands import AdministerUnit
    from tests.units_helpers import certify, make_units, released_batch

    plant, made = released_batch(users, sites)
    certify(plant, made)
    given = make_units(plant, made, 2)[0]
    at = (utcnow() - dt.timedelta(minutes=30)).replace(second=0, microsecond=0)
    units.administer(refetch(plant.tech), refetch(given), AdministerUnit.parse(dict(
        unit_identifier=given.identifier, recipient_code="PT-BG-0042", trial_code="",
        administered_at=at.isoformat())))
    site = refetch(sites["BG"])
    audit.act_as(db.session, None, reason="test site on Tokyo time")
    site.timezone = TOKYO
    db.session.flush()
    tokyo = (at + dt.timedelta(hours=9)).strftime("%Y-%m-%d %H:%M") + " JST (Asia/Tokyo)"  # UTC+9, no DST
    login(client, users["auditor_network"].username)
    page = client.get(f"/trace/units/{given.identifier}").get_data(as_text=True)
    assert tokyo in page and " UTC" not in page.split("<main", 1)[-1].split("</main>", 1)[0]
    pdf = " ".join(pdf_text(client.get(f"/trace/units/{given.identifier}/report.pdf").data).split())
    assert tokyo in pdf and at.strftime("%Y-%m-%d %H:%M UTC") not in pdf
    # The API keeps the instant, in ISO 8601 with its offset.
    from cellfactory.units.trace import trace_unit

    lines = [u for d in trace_unit(refetch(users["auditor_network"]), given.identifier).donors
             for m in d.materials for b in m.batches for u in b.units if u.identifier == given.identifier]
    assert dt.datetime.fromisoformat(lines[0].administered_at) == at


def test_the_audit_trail_page_reads_in_words_and_opens_the_technical_view(client, users):
    login(client, "auditor")
    readable = client.get("/audit/?entity=site&id=BG").get_data(as_text=True)
    assert "Facility identifier (FIN): A9991" in _lines(readable) and "facility_id" not in readable
    assert 'href="/audit/?entity=site&amp;id=BG&amp;history=raw"' in readable
    raw = client.get("/audit/?entity=site&id=BG&history=raw").get_data(as_text=True)
    assert re.search(r'field-name">facility_id</span>: <del>—</del> → <ins>A9991', raw)
    assert raw.count('class="audit-time"') == readable.count('class="audit-time"') >= 1


def test_a_unit_label_prints_its_cells_as_the_unit_page_shows_them(client, users, sites):
    from tests.units_helpers import certify, make_units, released_batch

    plant, made = released_batch(users, sites)
    certify(plant, made)
    unit = make_units(plant, made, 1)[0]  # 1e8 cells per unit
    login(client, "technician.bg")
    page = html.unescape(client.get(f"/units/{unit.identifier}").get_data(as_text=True))
    label = client.get(f"/units/{unit.identifier}/label.pdf").data
    text = " ".join(pdf_text(label).split())
    assert "1.00 × 10⁸" in page and "Volume: 20 mL Cells: 1.00 × 10⁸" in text and "10^8" not in text


def test_a_page_of_the_trail_names_its_linked_records_in_one_statement_per_kind(client, users):
    """The users fixture granted a role to each user: each grant's entry names its user (one read of them all)."""
    login(client, "auditor")
    statements: list[str] = []

    def note(conn, cursor, statement, *args):
        statements.append(statement)

    engine = db.engine
    db.session.expunge_all()  # nothing read before: the page reads what it names
    sa.event.listen(engine, "before_cursor_execute", note)
    try:
        page = client.get("/audit/?entity=role_assignment&per_page=50").get_data(as_text=True)
    finally:
        sa.event.remove(engine, "before_cursor_execute", note)
    assert "User: Technician.Bg Tester (technician.bg)" in _lines(page)
    user_reads = [s for s in statements if re.search(r"FROM app_user\b", s) and "JOIN" not in s.split("WHERE")[0]]
    assert len(user_reads) <= 2, user_reads  # the signed-in user's roles may be read; the named users once

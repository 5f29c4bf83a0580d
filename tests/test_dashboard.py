"""The network dashboard: per site batches by state, units available by product, shipments in transit, open
deviations and release turnaround; network QA and auditors see every site, site staff their own. And the demo
network's units: stored, shipped, received with an excursion, administered, and traceable both ways."""

from __future__ import annotations

import datetime as dt
import re
import statistics

import pytest
import sqlalchemy as sa

from cellfactory import create_app
from cellfactory.auth.models import User
from cellfactory.batches.models import Batch
from cellfactory.core.clock import utcnow
from cellfactory.demo import DEMO_PASSWORD, load_demo
from cellfactory.deviations.models import Deviation, DeviationStatus
from cellfactory.donors.models import Donor
from cellfactory.extensions import db
from cellfactory.main.views import network_overview
from cellfactory.releases.models import BatchDecision, DecisionKind
from cellfactory.sites.models import Site
from cellfactory.units import services as units
from cellfactory.units import trace
from cellfactory.units.commands import DestroyUnit, Ship
from cellfactory.units.models import Recipient, Shipment, ShipmentStatus, Unit, UnitStatus
from tests.conftest import RequestIsolatingClient, fresh_database, login, make_config, refetch
from tests.units_helpers import certify, make_units, released_batch, storage


def row(html: str, site: str) -> str:
    match = re.search(rf'<tr id="site-{site}">(.*?)</tr>', html, re.S)
    assert match, f"no dashboard row for {site}"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", match.group(1))).strip()


def count_queries(fn, *args):
    statements = []

    def before(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        statements.append(statement)

    engine = db.engine
    sa.event.listen(engine, "before_cursor_execute", before)
    try:
        result = fn(*args)
    finally:
        sa.event.remove(engine, "before_cursor_execute", before)
    return result, len(statements)


# --- on the test plant -----------------------------------------------------------------------------


def test_numbers_per_site_and_scoping(client, users, sites):
    plant, batch = released_batch(users, sites)
    certify(plant, batch)
    made = make_units(plant, batch, 4)
    storage(plant, sites["BG"])
    ago = (utcnow() - dt.timedelta(hours=2)).isoformat()
    units.ship(refetch(plant.tech), Ship.parse(dict(
        units=[u.identifier for u in [refetch(made[0])]], to_site=(sites["MZ"]).code, shipper="C", logger_reference="L",
        departed_at=ago)))
    units.destroy(refetch(plant.tech), refetch(made[1]), DestroyUnit.parse(dict(reason="bag damaged")))
    decision = db.session.scalar(sa.select(BatchDecision).where(BatchDecision.batch_id == batch.id,
                                                                BatchDecision.kind == DecisionKind.CERTIFICATION))
    # The batch started 12.5 days before its certification (set directly: the services start batches now).
    db.session.execute(sa.update(Batch.__table__).where(Batch.__table__.c.id == batch.id).values(
        started_at=decision.decided_at - dt.timedelta(days=12, hours=12)))
    db.session.expire_all()
    expected_days = 12.5

    network, queries = count_queries(network_overview, refetch(users["auditor_network"]))
    assert queries <= 4, queries  # grouped queries, not one per site or batch
    by_site = {s.code: s for s in network}
    assert set(by_site) == {"BG", "MZ"}
    bg, mz = by_site["BG"], by_site["MZ"]
    assert bg.batches == {"released": 1} and mz.batches == {}
    assert bg.units_available == {"UCMSC": 2} and mz.units_available == {}
    assert (bg.shipments_out, bg.shipments_in, mz.shipments_out, mz.shipments_in) == (1, 0, 0, 1)
    assert bg.certified == 1 and bg.turnaround_days == pytest.approx(expected_days)
    assert mz.turnaround_days is None

    login(client, "auditor")
    html = client.get("/").get_data(as_text=True)
    assert "The network at a glance" in html
    assert row(html, "BG").startswith("BG Cell Factory Bergamo 1 released 2 UCMSC 1 leaving 0 coming 0")
    assert f"{expected_days:.1f} days" in row(html, "BG")
    assert row(html, "MZ") == ("MZ Cell Factory Monza none none 0 leaving 1 coming 0 "
                               "no batch first certified in the last 365 days")
    assert "1 batch first certified in the last 365 days" in row(html, "BG")
    client.post("/auth/logout")

    login(client, "technician.mz")
    html = client.get("/").get_data(as_text=True)
    assert "Your site at a glance" in html and 'id="site-BG"' not in html
    assert row(html, "MZ").startswith("MZ Cell Factory Monza none none 0 leaving 1 coming")
    client.post("/auth/logout")
    login(client, "admin.bg")  # administrators hold no GMP role: no numbers
    assert 'id="network"' not in client.get("/").get_data(as_text=True)


def test_turnaround_counts_only_batches_first_certified_in_the_window(client, users, sites):
    """The median covers the batches first certified in the last 365 days: one certified before the window is left
    out, even when a later certification of it (the final one after a conditional release) falls in the window."""
    from tests.units_helpers import another_released_batch

    plant, recent = released_batch(users, sites)
    certify(plant, recent)
    _, old = another_released_batch(plant, sites, 1)
    _, older = another_released_batch(plant, sites, 2)
    now = utcnow()

    def dated(batch, started_days_ago: float, *decided_days_ago: float) -> None:
        # As the state machine leaves them: the status last changed at the latest decision.
        db.session.execute(sa.update(Batch.__table__).where(Batch.__table__.c.id == batch.id).values(
            started_at=now - dt.timedelta(days=started_days_ago),
            status_changed_at=now - dt.timedelta(days=min(decided_days_ago))))
        decisions = db.session.scalars(sa.select(BatchDecision).where(
            BatchDecision.batch_id == batch.id, BatchDecision.kind != DecisionKind.REVIEW)
            .order_by(BatchDecision.id)).all()
        assert len(decisions) == 1
        db.session.execute(sa.update(BatchDecision.__table__).where(BatchDecision.__table__.c.id == decisions[0].id)
                           .values(decided_at=now - dt.timedelta(days=decided_days_ago[0])))
        for days in decided_days_ago[1:]:  # a later certifying decision of the same batch
            db.session.execute(sa.insert(BatchDecision.__table__).values(
                {c.name: getattr(decisions[0], c.key) for c in BatchDecision.__table__.columns if c.name != "id"}
                | {"kind": DecisionKind.FINAL, "decided_at": now - dt.timedelta(days=days)}))

    dated(recent, 30, 20)  # 10 days, in the window
    dated(old, 420, 400)  # certified 400 days ago: out of the window
    dated(older, 420, 380, 100)  # first certified 380 days ago, final certification 100 days ago: out
    db.session.expire_all()

    network, queries = count_queries(network_overview, refetch(users["auditor_network"]))
    assert queries <= 4
    bg = next(s for s in network if s.code == "BG")
    assert bg.certified == 1 and bg.turnaround_days == pytest.approx(10)
    assert bg.batches == {"released": 3}  # the counts by state still cover every batch

    dated(recent, 500, 450)
    db.session.expire_all()
    bg = next(s for s in network_overview(refetch(users["auditor_network"])) if s.code == "BG")
    assert bg.certified == 0 and bg.turnaround_days is None
    login(client, "auditor")
    assert "no batch first certified in the last 365 days" in row(client.get("/").get_data(as_text=True), "BG")


# --- on the demo network --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    with fresh_database() as url:
        app = create_app(make_config(url, tmp_path_factory.mktemp("demo-dashboard")))
        app.config["WTF_CSRF_ENABLED"] = False
        app.test_client_class = RequestIsolatingClient
        with app.app_context():
            load_demo(DEMO_PASSWORD)
            db.session.remove()
        yield app
        db.state(app).engine.dispose()


def test_demo_dashboard_numbers_match_the_records(demo):
    with demo.app_context():
        auditor = db.session.scalar(sa.select(User).where(User.username == "auditor"))
        overview, queries = count_queries(network_overview, auditor)
        assert queries <= 4
        by_site = {s.code: s for s in overview}
        assert list(by_site) == ["BG", "MI", "MZ", "PV", "SR"]
        sites = {s.id: s.code for s in db.session.scalars(sa.select(Site))}
        for site_id, code in sites.items():
            batches = {s.label: n for s, n in db.session.execute(sa.select(Batch.status, sa.func.count()).where(
                Batch.site_id == site_id).group_by(Batch.status))}
            assert by_site[code].batches == batches, code
            deviations = db.session.scalar(sa.select(sa.func.count()).select_from(Deviation).where(
                Deviation.site_id == site_id, Deviation.status == DeviationStatus.OPEN))
            assert by_site[code].open_deviations == deviations, code
            days = []
            for batch in db.session.scalars(sa.select(Batch).where(Batch.site_id == site_id)):
                decided = [d.decided_at for d in db.session.scalars(sa.select(BatchDecision).where(
                    BatchDecision.batch_id == batch.id)) if d.kind.certifies and d.kind != DecisionKind.REJECTION]
                if decided and min(decided) >= utcnow() - dt.timedelta(days=365):  # first certified in the window
                    days.append(max(0.0, (min(decided) - batch.started_at).total_seconds() / 86400))
            assert by_site[code].turnaround_days == (pytest.approx(statistics.median(days)) if days else None), code
        assert by_site["BG"].units_available == {"UCMSC": 2}  # of three in stock, one is reserved for SR
        assert by_site["SR"].units_available == {"UCMSC": 1}  # received, not yet administered
        assert by_site["MZ"].units_available == {}  # the excursion put its units in quarantine
        assert by_site["BG"].batches["released"] == 1 and by_site["BG"].turnaround_days >= 0
        assert by_site["MZ"].open_deviations >= 1  # the on-hold batch's out-of-specification result

    client = demo.test_client()
    login(client, "qa.network", DEMO_PASSWORD)
    html = client.get("/").get_data(as_text=True)
    for code in ("BG", "MI", "MZ", "PV", "SR"):
        assert f'id="site-{code}"' in html
    assert "2 UCMSC" in row(html, "BG")
    # The raw audit data left the dashboard (issue 16): it stays on the audit trail's own pages.
    assert "Latest entries in the audit trail" not in html and 'class="table audit"' not in html
    assert client.get("/audit/").status_code == 200
    # Each figure is a link to its filtered list, which shows that many records.
    assert '<a href="/units/?status=available&amp;product=UCMSC&amp;site=BG"><span class="num">2</span> UCMSC</a>' \
        in html
    units_page = client.get("/units/?status=available&product=UCMSC&site=BG").get_data(as_text=True)
    assert units_page.count('href="/units/batches/') == 2  # one row per unit
    client.post("/auth/logout")
    login(client, "technician.bg", DEMO_PASSWORD)
    html = client.get("/").get_data(as_text=True)
    assert 'id="site-BG"' in html and 'id="site-MZ"' not in html and 'id="site-SR"' not in html
    assert "Your roles" in html and "Electronic signature" in html


def test_demo_units_are_stored_shipped_received_and_administered(demo):
    with demo.app_context():
        all_units = db.session.scalars(sa.select(Unit)).all()
        by_site: dict[str, list[Unit]] = {}
        for unit in all_units:
            by_site.setdefault(unit.site.code, []).append(unit)
        assert {u.status for u in by_site["BG"]} == {UnitStatus.AVAILABLE, UnitStatus.RESERVED, UnitStatus.QUARANTINE}
        assert all(u.position is not None and u.position.path.startswith("LN2-01/R1/B01/") for u in by_site["BG"])
        assert sorted(u.status.value for u in by_site["SR"]) == ["administered", "administered", "received"]
        assert {u.status for u in by_site["MZ"]} == {UnitStatus.QUARANTINE}
        assert all(u.position.segregated for u in by_site["MZ"])
        shipments = db.session.scalars(sa.select(Shipment)).all()
        assert {(s.from_site.code, s.to_site.code, s.temperature_excursion) for s in shipments} == {
            ("BG", "SR", False), ("BG", "MZ", True)}
        assert all(s.status == ShipmentStatus.RECEIVED for s in shipments)
        assert {r.code for r in db.session.scalars(sa.select(Recipient))} == {"PT-SR-0001", "PT-SR-0002"}
        products = {u.product_code for u in all_units}
        assert products == {"A0101", "A0103"}  # the UC-MSC units, and PV's two CD34+ graft units labelled with the SEC
        assert [(u.product_code, u.status) for u in by_site["PV"]] == [("A0103", UnitStatus.AVAILABLE)] * 2


def test_trace_forward_and_backward_agree_on_the_demo_network(demo):
    with demo.app_context():
        network = db.session.scalar(sa.select(User).where(User.username == "qa.network"))
        donors = db.session.scalars(sa.select(Donor).order_by(Donor.id)).all()
        seen_units: set[str] = set()
        for donor in donors:
            forward = trace.trace_donor(network, donor.code, donor.site.code)
            seen_units |= forward.unit_identifiers
            for identifier in forward.unit_identifiers:
                back = trace.trace_unit(network, identifier)
                assert [(d.code, d.site) for d in back.donors] == [(donor.code, donor.site.code)]
            for recipient in forward.recipients:
                back = trace.trace_recipient(network, recipient.split()[0])
                assert (donor.code, donor.site.code) in [(d.code, d.site) for d in back.donors]
                assert back.unit_identifiers <= forward.unit_identifiers
        assert seen_units == {u.identifier for u in db.session.scalars(sa.select(Unit))}
        recipients = trace.trace_recipient(network, "PT-SR-0001")
        assert len(recipients.donors) == 1 and "PT-SR-0001 (SR)" in recipients.recipients
        assert len(recipients.unit_identifiers) == 8  # the whole batch the recipient's unit came from
        # A site's own staff: BG traces its donor to the units now at MZ and SR; MZ cannot trace BG's donor.
        bg_donor = recipients.donors[0].code
        bg_tech = db.session.scalar(sa.select(User).where(User.username == "technician.bg"))
        held = {u.held_by for d in trace.trace_donor(bg_tech, bg_donor, "BG").donors for m in d.materials
                for b in m.batches for u in b.units}
        assert held == {"BG", "MZ", "SR"}
        mz_tech = db.session.scalar(sa.select(User).where(User.username == "technician.mz"))
        from cellfactory.core.errors import NotFound

        with pytest.raises(NotFound):
            trace.trace_donor(mz_tech, bg_donor, "BG")


def test_each_figure_at_a_glance_opens_its_list_with_that_many_records(demo):
    """Issue 16: every figure of the sites at a glance is a link to the list it counts, filtered by site and state,
    and that list holds as many records as the figure says."""
    client = demo.test_client()
    login(client, "qa.network", DEMO_PASSWORD)
    html = client.get("/").get_data(as_text=True)
    card = html[html.index('id="network"'):]
    card = card[:card.index("</section>")]
    figures = re.findall(r'<a href="([^"]+)"><span class="num">(\d+)</span>', card)
    assert len(figures) >= 5 * 3  # per site at least its two shipment figures and its open deviations
    kinds = set()
    for href, figure in figures:
        href = href.replace("&amp;", "&")
        page = client.get(href)
        assert page.status_code == 200, href
        text = page.get_data(as_text=True)
        path = href.split("?")[0]
        kinds.add(path)
        if path == "/units/":
            shown = text.count('href="/units/batches/')  # one per row
        else:
            noun = {"/batches/": "batch", "/deviations/": "deviation", "/shipments/": "shipment"}[path]
            match = re.search(rf'<p class="muted">(\d+) {noun}(?:es|s)?</p>', text)
            assert match, href
            shown = int(match.group(1))
        assert shown == int(figure), (href, figure, shown)
    assert kinds == {"/batches/", "/units/", "/shipments/", "/deviations/"}


@pytest.mark.parametrize("username", ["qa.bg", "qa.network", "qp.bg", "technician.bg", "auditor", "admin.bg"])
def test_the_whole_dashboard_page_reads_the_database_in_at_most_15_statements(demo, username):
    """The benchmark's target for a page (bench/run.py MAX_QUERIES), here for every role's inbox and its site figures
    on the demo network (a transaction's BEGIN is not a statement of the page)."""
    client = demo.test_client()
    login(client, username, DEMO_PASSWORD)
    client.get("/")  # the first page of a session records its start

    def page():
        response = client.get("/")
        assert response.status_code == 200
        return response

    with demo.app_context():
        statements = []

        def before(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
            if not statement.startswith("BEGIN"):
                statements.append(statement)

        engine = db.state(demo).engine
        sa.event.listen(engine, "before_cursor_execute", before)
        try:
            page()
        finally:
            sa.event.remove(engine, "before_cursor_execute", before)
    assert len(statements) <= 15, "\n".join(statements)

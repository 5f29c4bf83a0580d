"""Hostile text and implausible dates are refused with a field error at every door, nothing is half-saved,
and an error response never follows a commit.

The expected messages are written out here from the rule (control characters, unpaired surrogates,
bidirectional controls, lengths, years 1900-2100), not read from the code under test.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa
from markupsafe import escape

from cellfactory import create_app
from cellfactory.audit.models import AuditEntry
from cellfactory.auth.models import Role
from cellfactory.batches.models import Batch, BatchStep
from cellfactory.core.clock import utcnow
from cellfactory.core.errors import ValidationFailed
from cellfactory.core.forms import BaseForm
from cellfactory.deviations.models import Deviation
from cellfactory.donors import services as donor_services
from cellfactory.donors.commands import RegisterDonor
from cellfactory.donors.models import Donor
from cellfactory.extensions import db
from cellfactory.materials.commands import ReceiveMaterial
from cellfactory.materials.models import SourceMaterial
from cellfactory.qc.models import QcResult
from cellfactory.reagents.models import ReagentLot
from cellfactory.sites.commands import CreateSite
from cellfactory.units.models import Shipment
from tests.batch_helpers import batch_start, build_plant, start_command
from tests.conftest import PASSWORD, fresh_database, login, make_config, make_user, refetch
from tests.intake_helpers import donor_data, receipt_data
from tests.test_api import bearer, new_token

API = "/api/v1"
CONTROL = "Remove the control characters (such as NUL or BEL): they cannot be stored."
SURROGATE = ("This text contains a character that could not be read (an unpaired surrogate, or U+FFFD, which a "
             "browser sends in its place): type the text again.")
BIDI = ("Remove the invisible direction-control characters (U+200E, U+200F, U+061C, U+202A-U+202E, "
        "U+2066-U+2069): they change how the text reads.")
YEAR = "The year must be between 1900 and 2100."

HOSTILE = {
    "lone surrogate": ("\ud800", SURROGATE),
    "NUL": ("a\x00b", CONTROL),
    "BEL": ("\x07", CONTROL),
    "right-to-left override": ("\u202eabc", BIDI),
    "10,000 characters": ("x" * 10_000, None),  # each field's own maximum: checked by pattern
}
TOO_LONG = re.compile(r"Use at most (\d+) characters \(this has 10000\)\.")


def as_browser_sends(value: str) -> str:
    """A browser cannot encode an unpaired surrogate and sends U+FFFD in its place (WHATWG URL encoding)."""
    return re.sub("[\ud800-\udfff]", "\ufffd", value)


def form_body(data: dict) -> str:
    return urlencode({k: as_browser_sends(v) if isinstance(v, str) else v for k, v in data.items()}, doseq=True)


def local(hours_ago: float) -> str:
    return (utcnow() - dt.timedelta(hours=hours_ago)).astimezone(dt.timezone(dt.timedelta(hours=1))) \
        .strftime("%Y-%m-%dT%H:%M")


# --- the doors -------------------------------------------------------------------------------------
# Each door: who uses it, what it counts (nothing may be added), the page (url, data, field) and the
# API (method, url, json, field); the hostile value goes into `field`.


def _doors(world) -> dict:
    batch, lot = world["batch"], world["lot"]
    receipt = receipt_data(donor_code="UC-0001", din="=A99912600099900")
    return {
        "login": dict(user=None, count=AuditEntry, page=("/auth/login", {"username": "technician.bg",
                                                                             "password": PASSWORD}, "username")),
        "donor registration": dict(
            user="technician", count=Donor,
            page=("/donors/new", donor_data("UC-0777"), "consent_form_version"),
            api=("post", f"{API}/donors", donor_data("UC-0778"), "consent_form_version")),
        "material receipt": dict(
            user="technician", count=SourceMaterial,
            page=("/materials/receive", {**receipt, "collected_at": local(6), "transport_started_at": local(5),
                                         "arrived_at": local(1), "container_intact": "y",
                                         "documents_complete": "y"}, "collection_centre"),
            api=("post", f"{API}/materials", {**receipt, "quantity": 35.5, "transport_temp_min_c": 4.0,
                                              "transport_temp_max_c": 8.5}, "collection_centre")),
        "batch start": dict(
            user="technician", count=Batch,
            page=("/batches/start", {"product": "UCMSC", "din": world["din"]}, "din"),
            api=("post", f"{API}/batches", {"product": "UCMSC", "materials": [world["din"]]}, "materials[0]")),
        "step entry": dict(
            user="technician", count=AuditEntry, step=True,
            page=(f"/batches/{batch}/steps/ISO", {"started_at": local(3), "ended_at": local(2),
                                                  "equipment": ["BSC-01"], "version": "1"}, "observations"),
            api=("put", f"{API}/batches/{batch}/steps/ISO", {"version": 1, "started_at": utcnow().isoformat(),
                                                               "equipment": ["BSC-01"]}, "observations")),
        "QC result": dict(
            user="qc", count=QcResult,
            page=(f"/qc/batches/{batch}/results/new", {"test": "VIAB", "sample_id": "S-1", "value": "92",
                                                       "sampled_at": local(1)}, "raw_data_reference"),
            api=("post", f"{API}/batches/{batch}/results", {"test": "VIAB", "sample_id": "S-1", "value": 92,
                                                             "sampled_at": utcnow().isoformat()},
                 "raw_data_reference")),
        "deviation": dict(
            user="technician", count=Deviation,
            page=("/deviations/new", {"description": "Incubator alarm at night", "classification": "minor"},
                  "title"),
            api=("post", f"{API}/deviations", {"description": "Incubator alarm at night", "classification": "minor",
                                               "site": "BG"}, "title")),
        "reason of a lot decision": dict(
            user="qa", count=AuditEntry, lot=lot,
            page=(f"/reagents/lots/{lot}/status", {"status": "rejected"}, "reason"),
            api=("post", f"{API}/lots/{lot}/status", {"status": "rejected"}, "reason")),
        "shipment": dict(
            user="technician", count=Shipment,
            page=("/shipments/new", {"to_site": "MZ", "logger_reference": "LOG-1", "departed_at": local(1)},
                  "shipper"),
            api=("post", f"{API}/shipments", {"units": ["X"], "to_site": "MZ", "logger_reference": "LOG-1",
                                              "departed_at": utcnow().isoformat()}, "shipper")),
    }


@pytest.fixture
def world(users, sites):
    plant = build_plant(users, sites)
    from cellfactory.batches import services as batch_services

    batch = batch_services.start_batch(plant.tech, sites["BG"],
                                       start_command(sites["BG"], "UCMSC", [plant.material_din],
                                                     started_at=batch_start()))
    # A second accepted cord, free for a new batch.
    from cellfactory.materials import services as material_services

    material = material_services.receive_material(refetch(plant.tech), sites["BG"],
                                                  ReceiveMaterial.of(receipt_data(din="=A99912600055500")))
    material_services.print_labels(refetch(plant.tech), [material])
    lot = next(iter(plant.lots.values()))
    return {"plant": plant, "batch": batch.number, "lot": lot.id, "din": material.din,
            "people": {"technician": plant.tech, "qc": plant.qc, "qa": plant.qa}}


def _count(model) -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(model))


def _state(world) -> tuple:
    """Everything the doors could change: the lot's status, the ISO step's entries."""
    lot = db.session.get(ReagentLot, world["lot"])
    step = db.session.scalar(sa.select(BatchStep).join(Batch).where(Batch.number == world["batch"],
                                                                     BatchStep.code == "ISO"))
    db.session.expire_all()
    return lot.status, step.version, step.observations


def _expected(value_name: str, message: str | None, problem: str) -> None:
    if message is None:
        match = TOO_LONG.fullmatch(problem)
        assert match, problem
        assert int(match.group(1)) < 10_000
    else:
        assert problem == message


DOORS = ["login", "donor registration", "material receipt", "batch start", "step entry", "QC result", "deviation",
         "reason of a lot decision", "shipment"]


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize("value_name", list(HOSTILE))
def test_hostile_text_is_refused_at_the_page_and_the_api_with_the_same_field_error(client, app, world, door,
                                                                                     value_name):
    value, message = HOSTILE[value_name]
    spec = _doors(world)[door]
    person = world["people"].get(spec["user"]) if spec["user"] else None
    if person is not None:
        assert login(client, person.username).status_code == 302
    url, data, field = spec["page"]
    before, state = _count(spec["count"]), _state(world)
    response = client.post(url, data=form_body({**data, field: value}),
                           content_type="application/x-www-form-urlencoded")
    html = response.get_data(as_text=True)
    assert response.status_code == 422, html[:2000]
    page_problem = message or TOO_LONG.search(html).group(0)
    _expected(value_name, message, page_problem)
    assert str(escape(page_problem)) in html
    assert _count(spec["count"]) == before and _state(world) == state
    if "api" not in spec:
        return
    method, api_url, body, api_field = spec["api"]
    token = new_token(refetch(person))
    before = _count(spec["count"])
    target = body
    if "[" in api_field:  # a list item: materials[0]
        name = api_field.split("[")[0]
        target = {**body, name: [value]}
    else:
        target = {**body, api_field: value}
    response = getattr(client, method)(api_url, json=target, headers=bearer(token))
    assert response.status_code == 422, response.get_data(as_text=True)[:2000]
    fields = response.get_json()["error"]["fields"]
    assert api_field in fields, fields
    _expected(value_name, message, fields[api_field])
    if message is not None:
        assert fields[api_field] == page_problem
    assert _count(spec["count"]) == before and _state(world) == state


def test_the_login_form_refuses_nul_before_looking_the_user_up(client, users):
    before = _count(AuditEntry)
    response = client.post("/auth/login", data={"username": "technician.bg\x00", "password": PASSWORD})
    assert response.status_code == 422
    assert str(escape(CONTROL)) in response.get_data(as_text=True)
    assert _count(AuditEntry) == before


@pytest.mark.parametrize(("path", "field"), [("/donors/?q=a%00b", "q"), ("/batches/?status=%E2%80%AEx", "status"),
                                             ("/audit/?q=%07", "q")])
def test_hostile_query_strings_get_a_clear_page(client, login_as, path, field):
    login_as("technician")
    response = client.get(path)
    assert response.status_code == 422
    assert "The search or filter " + field + " cannot be used" in response.get_data(as_text=True)


@pytest.mark.parametrize(("path", "field"), [("/donors?q=a%00b", "q"), ("/batches?site=%E2%80%AEBG", "site")])
def test_hostile_query_strings_are_422_in_the_api(client, users, path, field):
    response = client.get(API + path, headers=bearer(new_token(refetch(users["technician"]))))
    assert response.status_code == 422
    assert field in response.get_json()["error"]["fields"]


def test_hostile_path_segment_is_not_found_not_a_server_error(client, login_as):
    login_as("technician")
    assert client.get("/donors/BG/UC%00X").status_code == 404


# --- dates ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["donation_date", "consent_date"])
def test_donor_dated_year_one_is_refused_by_the_service(users, sites, field):
    tech = refetch(users["technician"])
    before = _count(Donor), _count(AuditEntry)
    with pytest.raises(ValidationFailed) as refused:
        donor_services.register_donor(tech, sites["BG"],
                                      RegisterDonor.of(donor_data("UC-0001", **{field: dt.date(1, 1, 1)})))
    assert refused.value.fields[field] == YEAR
    assert (_count(Donor), _count(AuditEntry)) == before


@pytest.mark.parametrize("field", ["donation_date", "consent_date"])
def test_donor_dated_year_one_is_refused_alike_on_the_page_and_in_the_api(client, users, field):
    login(client, "technician.bg")
    data = donor_data("UC-0001", donation_kind="living_stored", **{field: "0001-01-01"})
    page = client.post("/donors/new", data=data)
    assert page.status_code == 422
    assert YEAR in page.get_data(as_text=True)
    api = client.post(f"{API}/donors", json=data, headers=bearer(new_token(refetch(users["technician"]))))
    assert api.status_code == 422
    assert api.get_json()["error"]["fields"][field] == YEAR
    assert _count(Donor) == 0


def test_api_times_outside_1900_2100_are_refused(client, users, world):
    token = new_token(refetch(world["plant"].qc))
    response = client.post(f"{API}/batches/{world['batch']}/results", headers=bearer(token),
                           json={"test": "VIAB", "sample_id": "S-1", "value": 92,
                                 "sampled_at": "2101-01-01T00:00:00+00:00"})
    assert response.status_code == 422
    assert response.get_json()["error"]["fields"]["sampled_at"] == YEAR


# --- the database is the last line -----------------------------------------------------------------


def test_flush_refuses_hostile_text_from_any_caller_naming_the_column(users, sites):
    before = _count(Donor)
    donor = donor_services.register_donor(refetch(users["technician"]), sites["BG"],
                                          RegisterDonor.of(donor_data("UC-0001")))
    donor_id = donor.id
    db.session.commit()
    from cellfactory.audit import services as audit

    audit.act_as(db.session, refetch(users["technician"]), reason="import")
    row = db.session.get(Donor, donor_id)
    row.consent_scope = "clinical use\x00"
    with pytest.raises(ValidationFailed) as refused:
        db.session.flush()
    assert refused.value.fields == {"consent_scope": CONTROL}
    db.session.rollback()
    row = db.session.get(Donor, donor_id)
    row.consent_form_version = "v" * 41  # the column holds 40
    with pytest.raises(ValidationFailed) as refused:
        db.session.flush()
    assert refused.value.fields == {"consent_form_version": "Use at most 40 characters (this has 41)."}
    db.session.rollback()
    assert _count(Donor) == before + 1
    assert refetch(row).consent_scope == "clinical use and banking"


def test_every_form_of_the_application_checks_its_text():
    import importlib
    import pkgutil

    import cellfactory

    for module in pkgutil.walk_packages(cellfactory.__path__, "cellfactory."):
        if module.name.endswith(".forms"):
            importlib.import_module(module.name)
    from flask_wtf import FlaskForm

    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    ours = [form for form in subclasses(FlaskForm) if form.__module__.startswith("cellfactory.")]
    assert len(ours) > 30
    assert [form.__qualname__ for form in ours if not issubclass(form, BaseForm)] == []


# --- an error response never follows a commit ------------------------------------------------------


@pytest.fixture
def committed_app(tmp_path: Path):
    """An app on a database of its own: what a request commits stays, as in production."""
    with fresh_database() as url:
        application = create_app(make_config(url, tmp_path))
        application.config.update(WTF_CSRF_ENABLED=False, PROPAGATE_EXCEPTIONS=False)
        with application.app_context():
            from cellfactory.sites import services as site_services

            site_services.create_site(None, CreateSite(code="BG", name="Bergamo", facility_id="A9991",
                                                       timezone="Europe/Rome"))
            token = new_token(make_user("technician.bg", [(Role.TECHNICIAN, "BG")]))
        try:
            yield application, token
        finally:
            with application.app_context():
                db.session.remove()
                db.engine.dispose()


def _donor_codes(application) -> list[str]:
    with application.app_context():
        codes = list(db.session.scalars(sa.select(Donor.code).order_by(Donor.code)))
        db.session.remove()
        return codes


def test_a_failure_while_answering_leaves_nothing_saved(committed_app, monkeypatch):
    """The reported case: the service succeeded, the response then failed (eligibility of a donor dated year 1).
    Any failure after the service must roll the request back, so "nothing was saved" is true."""
    application, token = committed_app
    client = application.test_client()
    import cellfactory.donors.api as intake

    def broken(result):
        raise OverflowError("date value out of range")

    monkeypatch.setattr(intake, "eligibility_json", broken)
    response = client.post(f"{API}/donors", json=donor_data("UC-0001"), headers=bearer(token))
    assert response.status_code == 500
    assert "nothing was saved" in response.get_json()["error"]["message"]
    assert _donor_codes(application) == []
    monkeypatch.undo()
    assert client.post(f"{API}/donors", json=donor_data("UC-0002"), headers=bearer(token)).status_code == 201
    assert _donor_codes(application) == ["UC-0002"]


def test_a_page_that_fails_after_the_service_saves_nothing(committed_app, monkeypatch):
    application, _ = committed_app
    client = application.test_client()
    assert login(client, "technician.bg").status_code == 302
    import cellfactory.donors.views as views

    def broken(*args, **kwargs):
        raise RuntimeError("the flash failed")

    monkeypatch.setattr(views, "flash", broken)
    response = client.post("/donors/new", data=donor_data("UC-0001"))
    assert response.status_code == 500
    assert "nothing was saved" in response.get_data(as_text=True)
    assert _donor_codes(application) == []


def test_year_one_donor_is_refused_and_the_list_still_answers(committed_app):
    application, token = committed_app
    client = application.test_client()
    body = donor_data("UC-0001", donation_kind="living_stored", consent_date="0001-01-01")
    response = client.post(f"{API}/donors", json=body, headers=bearer(token))
    assert response.status_code == 422
    assert response.get_json()["error"]["fields"] == {"consent_date": YEAR}
    assert _donor_codes(application) == []
    assert client.get(f"{API}/donors", headers=bearer(token)).status_code == 200


def test_a_stored_year_one_donor_does_not_break_the_pages(committed_app):
    """Rows stored before the rule (or by a direct import) are shown, not crashed on."""
    application, token = committed_app
    with application.app_context():
        from cellfactory.auth.models import User

        tech = db.session.scalar(sa.select(User).where(User.username == "technician.bg"))
        from cellfactory.sites.models import Site

        site = db.session.scalar(sa.select(Site))
        donor_services.register_donor(tech, site,
                                      RegisterDonor.of(donor_data("UC-0001", donation_kind="living_stored")))
        db.session.execute(sa.update(Donor).values(donation_date=dt.date(1, 1, 1), consent_date=dt.date(1, 1, 1)))
        db.session.commit()
        db.session.remove()
    client = application.test_client()
    assert login(client, "technician.bg").status_code == 302
    assert client.get("/donors/").status_code == 200
    assert client.get("/donors/BG/UC-0001").status_code == 200
    assert client.get(f"{API}/donors", headers=bearer(token)).status_code == 200


def test_flush_refuses_a_line_break_in_a_one_line_column_and_keeps_it_in_a_text_column(users, sites):
    tech = refetch(users["technician"])
    with pytest.raises(ValidationFailed) as refused:
        donor_services.register_donor(tech, sites["BG"],
                                      RegisterDonor.of(donor_data("UC-0001", consent_form_version="CF\nv3")))
    assert refused.value.fields == {"consent_form_version": "This field takes one line: remove the line breaks "
                                                            "and tabs."}
    donor = donor_services.register_donor(refetch(tech), sites["BG"],
                                          RegisterDonor.of(donor_data("UC-0002",
                                                                      consent_scope="clinical use\r\nand banking")))
    assert refetch(donor).consent_scope == "clinical use\r\nand banking"


@pytest.mark.parametrize("path", ["/materials/?to=9999-12-31", "/materials/?from=0001-01-01",
                                  "/audit/?since=0001-01-01", "/audit/?until=9999-12-31"])
def test_date_filters_at_the_calendar_ends_never_crash_a_page(client, login_as, path):
    login_as("qa")
    assert client.get(path).status_code in (200, 422)


@pytest.mark.parametrize("query", ["since=0001-01-01T00:00:00%2B01:00", "until=9999-12-31T23:00:00-05:00"])
def test_api_audit_times_outside_1900_2100_are_422(client, users, query):
    response = client.get(f"{API}/audit?{query}", headers=bearer(new_token(refetch(users["qa"]))))
    assert response.status_code == 422
    assert list(response.get_json()["error"]["fields"].values()) == [YEAR]


def test_api_text_has_the_maximum_of_its_page_field(client, world):
    """A reason is at most 2,000 characters on the page (ReasonMixin) and in the API alike; a deviation's
    description 8,000."""
    qa_token, tech_token = new_token(refetch(world["plant"].qa)), new_token(refetch(world["plant"].tech))
    response = client.post(f"{API}/lots/{world['lot']}/status", headers=bearer(qa_token),
                           json={"status": "rejected", "reason": "r" * 2001})
    assert response.status_code == 422
    assert response.get_json()["error"]["fields"] == {"reason": "Use at most 2000 characters (this has 2001)."}
    before = _count(Deviation)
    response = client.post(f"{API}/deviations", headers=bearer(tech_token),
                           json={"title": "Long description", "description": "d" * 8000, "classification": "minor",
                                 "site": "BG"})
    assert response.status_code == 201, response.get_data(as_text=True)[:500]
    assert _count(Deviation) == before + 1


def test_a_commit_that_fails_at_the_end_of_the_request_says_nothing_was_saved(committed_app, monkeypatch):
    application, token = committed_app
    client = application.test_client()
    import cellfactory.web as web

    def failing_commit(session):
        raise sa.exc.OperationalError("COMMIT", {}, Exception("the database went away"))

    monkeypatch.setattr(web, "commit_request", failing_commit)
    response = client.post(f"{API}/donors", json=donor_data("UC-0001"), headers=bearer(token))
    assert response.status_code == 500
    assert "nothing was saved" in response.get_json()["error"]["message"]
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    monkeypatch.undo()
    assert _donor_codes(application) == []

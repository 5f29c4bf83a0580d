"""Intake through every door (issue 15): each write that has a page and an API (registering a donor, withdrawing
consent, entering and correcting serology, QA's confirmatory record and risk assessment, receiving source material,
QA's quarantine decision) refuses the same bad input with the same field and the same message, the message the
page has always shown, and saves nothing: no row and no audit entry."""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from cellfactory.audit.models import AuditEntry
from cellfactory.core.clock import utcnow
from cellfactory.core.errors import ValidationFailed
from cellfactory.core.text import BIDI_MESSAGE, CONTROL_MESSAGE, SURROGATE_MESSAGE
from cellfactory.donors import services as donor_services
from cellfactory.donors.commands import AddScreeningResult, RegisterDonor
from cellfactory.donors.models import Donor, ScreeningDecision, ScreeningResultRecord, ScreeningTest
from cellfactory.extensions import db
from cellfactory.materials import services as material_services
from cellfactory.materials.commands import DecideQuarantine, ReceiveMaterial, ReceiveMaterialStatingUnit
from cellfactory.materials.models import MaterialStatus, SourceMaterial
from cellfactory.signatures.models import Signature
from tests.conftest import PASSWORD, enable_signing, login, refetch
from tests.intake_helpers import TODAY, add_full_panel, donor_data, receipt_data
from tests.test_api import API, bearer, new_token
from tests.test_source_material_doors import field_error

ROME = ZoneInfo("Europe/Rome")
YEAR = "The year must be between 1900 and 2100."
REASON = "Say why this change is made: it goes into the audit trail."
DECISION_REASON = "Give the reason for the decision."
LONG = "x" * 10_000
FUTURE = (TODAY + dt.timedelta(days=3)).isoformat()
# Text that is no date, time or number: the page's field cannot read it and hands it to the command, which refuses
# it in the words the API gives for the same text.
DATE_FORMAT = "Enter the date as YYYY-MM-DD."
BAD_DATES = ["2026-13-45", "31/12/2026"]
NOT_A_TIME = "Not an ISO 8601 date and time: use e.g. 2026-11-22T08:00:00+01:00 or ...Z."
BAD_TIMES = ["2026-13-45T10:00", "31/12/2026 10:00"]
BAD_NUMBERS = ["abc", "1e3x"]


def _unreadable(field: str, bad: list[str], message: str) -> list[tuple]:
    """Cases (field, change, message) of text that cannot be read, the same through both doors."""
    return [(field, {field: text}, message) for text in bad]


def _saved() -> tuple[int, ...]:
    """Rows of every intake record, and the audit trail's length: a refusal changes none of them."""
    return tuple(db.session.scalar(sa.select(sa.func.count()).select_from(model)) for model in (
        Donor, ScreeningResultRecord, ScreeningDecision, SourceMaterial, Signature, AuditEntry))


def _refused_alike(client, *, api: tuple[str, dict], page: str, body: dict, page_body: dict | None = None,
                   field: str, message: str | None, prefix: str = "") -> None:
    """The API refuses `body` naming only `field` with `message` (or, when None, whatever it says); the page refuses
    the same input (`page_body`, or `body` as form text) with the same message next to the field; nothing is
    saved by either."""
    before = _saved()
    answer = client.post(api[0], headers=api[1], json=body)
    assert answer.status_code in (409, 422), answer.get_data(as_text=True)
    fields = answer.get_json()["error"]["fields"]
    assert set(fields) == {field}, fields
    message = message or fields[field]
    assert fields[field] == message
    form = page_body if page_body is not None else {key: "" if value is None else str(value)
                                                    for key, value in body.items()}
    shown = client.post(page, data={f"{prefix}{key}": value for key, value in form.items()})
    assert shown.status_code == 422
    assert field_error(shown.get_data(as_text=True), f"{prefix}{field}") == message
    assert _saved() == before


@pytest.fixture
def tech_api(client, users) -> dict[str, str]:
    login(client, "technician.bg")
    return bearer(new_token(refetch(users["technician"])))


@pytest.fixture
def qa_api(client, users) -> dict[str, str]:
    enable_signing(refetch(users["qa"]))
    login(client, "qa.bg")
    return bearer(new_token(refetch(users["qa"])))


# --- the commands alone ------------------------------------------------------------------------------------


def test_the_donor_command_names_every_wrong_field_in_the_pages_words():
    with pytest.raises(ValidationFailed) as refused:
        RegisterDonor.parse({"code": "Maria Rossi", "birth_year": "1990", "sex": "F", "donor_type": "allogeneic",
                             "donation_kind": "living", "donation_date": "", "consent_date": TODAY.isoformat(),
                             "consent_form_version": "CF\nv3", "consent_scope": " ", "htlv_risk": "false"})
    assert refused.value.fields == {
        "code": "Use the pseudonymised donor code: 3-32 letters, digits or '-', never a name.",
        "birth_year": "Must be a whole number.", "donation_date": "Enter the donation date.",
        "consent_form_version": "This field takes one line: remove the line breaks and tabs.",
        "consent_scope": "Say what the donor consented to.", "htlv_risk": "Must be true or false."}
    assert refused.value.message.startswith("The donor cannot be registered: ")
    assert "Enter the donation date." in refused.value.message and "never a name" in refused.value.message


def test_plain_data_may_write_numbers_as_text_a_json_body_may_not():
    data = receipt_data() | {"quantity": "35,5"}
    assert ReceiveMaterial.of(data).quantity == ReceiveMaterial.of(data | {"quantity": 35.5}).quantity
    with pytest.raises(ValidationFailed) as refused:
        ReceiveMaterialStatingUnit.parse(receipt_data() | {"quantity_unit": "g"})
    assert refused.value.fields == {name: "Must be a number (JSON number, not text)."
                                    for name in ("quantity", "transport_temp_min_c", "transport_temp_max_c")}
    naive = (utcnow() - dt.timedelta(hours=2)).replace(tzinfo=None).isoformat()
    with pytest.raises(ValidationFailed) as refused:
        ReceiveMaterial.parse(receipt_data(quantity=35.5, transport_temp_min_c=4, transport_temp_max_c=8,
                                           arrived_at=naive))
    assert set(refused.value.fields) == {"arrived_at"} and "offset" in refused.value.fields["arrived_at"]
    assert ReceiveMaterial.of(receipt_data(arrived_at=naive)).arrived_at.tzinfo is None  # the site's time


def test_a_quarantine_decision_s_meaning_must_be_the_decision_s():
    assert DecideQuarantine.parse({"decision": "release", "reason": "ok", "meaning": "released FROM quarantine"})
    with pytest.raises(ValidationFailed) as refused:
        DecideQuarantine.parse({"decision": "reject", "reason": "ok", "meaning": "Released from quarantine"})
    assert refused.value.fields == {"meaning": "Use 'Rejected after quarantine' or leave it out."}
    with pytest.raises(ValidationFailed) as refused:
        DecideQuarantine.parse({"decision": "maybe", "reason": ""})
    assert refused.value.fields == {"decision": "Use one of: release or reject.", "reason": DECISION_REASON}


def test_plain_data_refused_by_a_service_names_the_field_as_the_api_does(users, sites):
    tech = refetch(users["technician"])
    donor = donor_services.register_donor(tech, sites["BG"], RegisterDonor.of(donor_data()))
    before = _saved()
    with pytest.raises(ValidationFailed) as refused:
        donor_services.add_screening_result(tech, donor, AddScreeningResult.of({
            "test": "hbsag", "sample_date": "22/11/2026", "sample_type": "urine", "result": "negative"}))
    assert refused.value.fields == {
        "sample_date": "Enter the date as YYYY-MM-DD.", "lab_reference": "Enter the lab's reference.",
        "sample_type": "Only serum or plasma samples are accepted (Dir. 2006/17/EC Annex II 2.2)."}
    assert _saved() == before
    assert isinstance(AddScreeningResult.of({"test": "hbsag", "sample_date": TODAY, "sample_type": "SERUM",
                                             "result": "negative", "lab_reference": "L-1"}), AddScreeningResult)


# --- registering a donor: /donors/new and POST /donors -----------------------------------------------------


REGISTER_CASES = [
    ("code", {"code": ""}, "Enter the donor code."),
    ("code", {"code": "Maria Rossi"}, "Use the pseudonymised donor code: 3-32 letters, digits or '-', never a name."),
    ("code", {"code": "UC-0001"}, "Already used."),
    ("donation_date", {"donation_date": ""}, "Enter the donation date."),
    ("consent_date", {"consent_date": ""}, "Enter the consent date."),
    ("consent_form_version", {"consent_form_version": ""}, "Enter the version."),
    ("consent_scope", {"consent_scope": "   "}, "Say what the donor consented to."),
    ("donation_date", {"donation_date": "0001-01-01"}, YEAR),
    ("consent_date", {"consent_date": "9999-12-31"}, YEAR),
    ("consent_date", {"consent_date": TODAY.isoformat(), "donation_date": (TODAY - dt.timedelta(days=1)).isoformat()},
     "Consent must be given before or on the day of donation."),
    ("birth_date", {"birth_year": None, "birth_date": "1850-01-01"}, YEAR),
    ("birth_year", {"birth_year": 1850}, None),
    ("birth_year", {"birth_year": 1989, "birth_date": "1990-05-17"},
     "The birth year differs from the birth date's year."),
    ("mother_birth_date", {"donation_kind": "neonatal"},
     "Enter the mother's birth date: a neonatal donation is tested on the mother."),
    ("consent_form_version", {"consent_form_version": "CF\x00v3"}, CONTROL_MESSAGE),
    ("consent_scope", {"consent_scope": "clinical use\u202e and banking"}, BIDI_MESSAGE),
    ("consent_form_version", {"consent_form_version": LONG}, "Use at most 40 characters (this has 10000)."),
    ("consent_scope", {"consent_scope": LONG}, "Use at most 2000 characters (this has 10000)."),
    ("code", {"code": "UC-\u200f0002"}, BIDI_MESSAGE),
    *_unreadable("donation_date", BAD_DATES, DATE_FORMAT),
    *_unreadable("consent_date", BAD_DATES, DATE_FORMAT),
    ("birth_date", {"birth_year": None, "birth_date": "1990-02-30"}, DATE_FORMAT),
    ("mother_birth_date", {"donation_kind": "neonatal", "mother_birth_date": "17/05/1990"}, DATE_FORMAT),
    *_unreadable("birth_year", BAD_NUMBERS + ["1990.5"], "Must be a whole number."),
]


@pytest.mark.parametrize(("field", "change", "message"), REGISTER_CASES,
                         ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(REGISTER_CASES)])
def test_registering_a_donor_is_refused_alike_at_the_page_and_the_api(client, users, sites, tech_api, field, change,
                                                                       message):
    if field == "code" and change["code"] == "UC-0001":
        donor_services.register_donor(refetch(users["technician"]), sites["BG"],
                                      RegisterDonor.of(donor_data("UC-0001")))
    body = donor_data("UC-0002") | change
    _refused_alike(client, api=(f"{API}/donors", tech_api), page="/donors/new", body=body, field=field,
                   message=message)


def test_a_lone_surrogate_in_a_donor_is_refused_at_both_doors(client, tech_api):
    before = _saved()
    api = client.post(f"{API}/donors", headers=tech_api, json=donor_data("UC-0002", consent_scope="use\ud800"))
    assert api.status_code == 422 and api.get_json()["error"]["fields"] == {"consent_scope": SURROGATE_MESSAGE}
    page = client.post("/donors/new", data={**donor_data("UC-0002"), "consent_scope": "use\ufffd"})
    assert page.status_code == 422 and field_error(page.get_data(as_text=True), "consent_scope") == SURROGATE_MESSAGE
    assert _saved() == before


# --- consent withdrawal: /donors/BG/<code>/withdraw and POST /donors/<code>/consent-withdrawal -----------------


WITHDRAWAL_CASES = [
    ("withdrawn_on", {"withdrawn_on": ""}, "Enter the date."),
    ("reason", {"reason": ""}, REASON),
    ("withdrawn_on", {"withdrawn_on": FUTURE}, "The withdrawal date cannot be in the future."),
    ("withdrawn_on", {"withdrawn_on": "0001-01-01"}, YEAR),
    ("withdrawn_on", {"withdrawn_on": "9999-12-31"}, YEAR),
    ("reason", {"reason": "letter\x00"}, CONTROL_MESSAGE),
    ("reason", {"reason": "letter \u202e"}, BIDI_MESSAGE),
    ("reason", {"reason": LONG}, "Use at most 2000 characters (this has 10000)."),
    *_unreadable("withdrawn_on", BAD_DATES, DATE_FORMAT),
]


@pytest.mark.parametrize(("field", "change", "message"), WITHDRAWAL_CASES,
                         ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(WITHDRAWAL_CASES)])
def test_a_consent_withdrawal_is_refused_alike_at_the_page_and_the_api(client, users, sites, tech_api, field, change,
                                                                       message):
    donor_services.register_donor(refetch(users["technician"]), sites["BG"], RegisterDonor.of(donor_data()))
    body = {"withdrawn_on": TODAY.isoformat(), "reason": "written withdrawal"} | change
    _refused_alike(client, api=(f"{API}/donors/UC-0001/consent-withdrawal", tech_api),
                   page="/donors/BG/UC-0001/withdraw", body=body, field=field, message=message, prefix="withdraw-")
    assert refetch(db.session.scalar(sa.select(Donor))).consent_withdrawn_on is None


# --- serology: /donors/BG/<code>/results and POST /donors/<code>/screening ---------------------------------------


RESULT = {"test": "hbsag", "tested_person": "donor", "sample_date": TODAY.isoformat(), "sample_type": "serum",
          "result": "negative", "lab_reference": "LAB-1", "kit_lot": "K-77"}
RESULT_CASES = [
    ("sample_date", {"sample_date": ""}, "Enter the sample date."),
    ("lab_reference", {"lab_reference": " "}, "Enter the lab's reference."),
    ("sample_date", {"sample_date": FUTURE}, "The sample date cannot be in the future."),
    ("sample_date", {"sample_date": "0001-01-01"}, YEAR),
    ("sample_date", {"sample_date": "1980-01-01"}, "This cannot be before the donor's birth."),
    ("lab_reference", {"lab_reference": "LAB\x00"}, CONTROL_MESSAGE),
    ("kit_lot", {"kit_lot": "K\u202e77"}, BIDI_MESSAGE),
    ("lab_reference", {"lab_reference": LONG}, "Use at most 100 characters (this has 10000)."),
    # No result is preselected on the page: one left unchosen is missing, never a negative.
    ("result", {"result": None}, "Choose the result: negative, reactive, indeterminate."),
    ("result", {"result": ""}, "Choose the result: negative, reactive, indeterminate."),
    *_unreadable("sample_date", BAD_DATES, DATE_FORMAT),
]


@pytest.fixture
def donor(users, sites) -> Donor:
    tech = refetch(users["technician"])
    found = donor_services.register_donor(tech, sites["BG"],
                                          RegisterDonor.of(donor_data(birth_year=None, birth_date="1990-05-17")))
    add_full_panel(tech, found)
    return found


@pytest.mark.parametrize(("field", "change", "message"), RESULT_CASES,
                         ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(RESULT_CASES)])
def test_a_screening_result_is_refused_alike_at_the_page_and_the_api(client, donor, tech_api, field, change,
                                                                     message):
    _refused_alike(client, api=(f"{API}/donors/UC-0001/screening", tech_api), page="/donors/BG/UC-0001/results",
                   body=RESULT | change, field=field, message=message, prefix="result-")


CORRECTION_CASES = [
    ("reason", {"reason": ""}, REASON),
    ("reason", {"reason": LONG}, "Use at most 2000 characters (this has 10000)."),
    ("lab_reference", {"lab_reference": ""}, "Enter the lab's reference."),
    ("sample_date", {"sample_date": FUTURE}, "The sample date cannot be in the future."),
    ("sample_date", {"sample_date": "2026-02-29"}, DATE_FORMAT),
]


@pytest.mark.parametrize(("field", "change", "message"), CORRECTION_CASES,
                         ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(CORRECTION_CASES)])
def test_a_correction_is_refused_alike_at_the_page_and_the_api(client, donor, tech_api, field, change, message):
    original = next(r.id for r in refetch(donor).current_results if r.test == ScreeningTest.HCV)
    body = RESULT | {"test": "anti_hcv", "reason": "transcription error"} | change
    _refused_alike(client, api=(f"{API}/donors/UC-0001/screening/{original}/correction", tech_api),
                   page=f"/donors/BG/UC-0001/results/{original}/correct", body=body, field=field, message=message)
    assert db.session.get(ScreeningResultRecord, original).superseded_by_id is None


# --- QA's decisions on a reactive result ----------------------------------------------------------------------


def _reactive(users, sites, test: ScreeningTest) -> int:
    tech = refetch(users["technician"])
    found = donor_services.register_donor(tech, sites["BG"], RegisterDonor.of(donor_data("UC-0009")))
    add_full_panel(tech, found)
    donor_services.add_screening_result(tech, found, AddScreeningResult.of({
        "test": test.value, "sample_date": TODAY.isoformat(), "sample_type": "serum", "result": "reactive",
        "lab_reference": "LAB-R"}))
    return next(r.id for r in refetch(found).current_results if r.test == test)


CONFIRMATORY_CASES = [
    ("confirmatory_results", {"confirmatory_results": " "},
     "Enter the confirmatory tests and their results (method, lab, result)."),
    ("reason", {"reason": ""}, DECISION_REASON),
    ("reason", {"reason": "false\x07reaction"}, CONTROL_MESSAGE),
    ("confirmatory_results", {"confirmatory_results": LONG}, "Use at most 4000 characters (this has 10000)."),
    ("reason", {"reason": LONG}, "Use at most 2000 characters (this has 10000)."),
]


@pytest.mark.parametrize(("field", "change", "message"), CONFIRMATORY_CASES,
                         ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(CONFIRMATORY_CASES)])
def test_a_confirmatory_record_is_refused_alike_at_the_page_and_the_api(client, users, sites, qa_api, field, change,
                                                                        message):
    result = _reactive(users, sites, ScreeningTest.HCV)
    body = {"reason": "false reaction", "confirmatory_results": "HCV RNA not detected"} | change
    _refused_alike(client, api=(f"{API}/donors/UC-0009/screening/{result}/confirmatory", qa_api),
                   page=f"/donors/BG/UC-0009/results/{result}/confirmatory", body=body | {"password": PASSWORD},
                   page_body=body | {"meaning": "SCREENING_CLEARED", "username": "qa.bg", "password": PASSWORD},
                   field=field, message=message)


ASSESSMENT_CASES = [
    ("reason", {"reason": "  "}, DECISION_REASON),
    ("reason", {"reason": "HBV DNA \u202enot detected"}, BIDI_MESSAGE),
    ("reason", {"reason": LONG}, "Use at most 4000 characters (this has 10000)."),
]


@pytest.mark.parametrize(("field", "change", "message"), ASSESSMENT_CASES,
                         ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(ASSESSMENT_CASES)])
def test_a_risk_assessment_is_refused_alike_at_the_page_and_the_api(client, users, sites, qa_api, field, change,
                                                                    message):
    result = _reactive(users, sites, ScreeningTest.ANTI_HBC)
    body = {"reason": "anti-HBs 150 IU/L"} | change
    _refused_alike(client, api=(f"{API}/donors/UC-0009/screening/{result}/risk-assessment", qa_api),
                   page=f"/donors/BG/UC-0009/results/{result}/assessment",
                   body=body | {"allowed": True, "password": PASSWORD},
                   page_body=body | {"meaning": "DONATION_ALLOWED", "username": "qa.bg", "password": PASSWORD},
                   field=field, message=message)


# --- receipt: /materials/receive and POST /materials --------------------------------------------------------------


def _page_time(value: dt.datetime) -> str:
    return value.astimezone(ROME).strftime("%Y-%m-%dT%H:%M")


BASE = utcnow().replace(second=0, microsecond=0)
TIMES = {"collected_at": BASE - dt.timedelta(hours=6), "transport_started_at": BASE - dt.timedelta(hours=5),
         "arrived_at": BASE - dt.timedelta(hours=1)}
RECEIPT = {"din": "=A99912600012300", "material_type": "umbilical_cord", "donor": "UC-0001",
           "collection_centre": "Sala parto", "anticoagulant": ""}
# (field, change of the common values, change of the numbers, change of the times, message)
RECEIPT_CASES = [
    ("donor", {"donor": ""}, {}, {}, "Enter the donor code."),
    ("collection_centre", {"collection_centre": " "}, {}, {}, "Enter the collecting centre."),
    ("collection_centre", {"collection_centre": "Sala\x00parto"}, {}, {}, CONTROL_MESSAGE),
    ("collection_centre", {"collection_centre": "Sala \u202eparto"}, {}, {}, BIDI_MESSAGE),
    ("collection_centre", {"collection_centre": LONG}, {}, {}, "Use at most 200 characters (this has 10000)."),
    ("anticoagulant", {"anticoagulant": LONG}, {}, {}, "Use at most 100 characters (this has 10000)."),
    ("donor", {"donor": "UNKNOWN-9"}, {}, {}, "No donor with this code is registered at BG: register the donor first."),
    ("quantity", {}, {"quantity": -3}, {}, "The quantity must be more than zero."),
    ("quantity", {}, {"quantity": 0}, {}, "The quantity must be more than zero."),
    ("transport_temp_max_c", {}, {"transport_temp_min_c": 9, "transport_temp_max_c": 4}, {},
     "The highest temperature is below the lowest."),
    ("arrived_at", {}, {}, {"arrived_at": BASE - dt.timedelta(hours=5, minutes=30)},
     "This cannot be before the start of transport."),
    ("collected_at", {}, {}, {"collected_at": dt.datetime(1850, 6, 1, 10, tzinfo=dt.UTC)}, YEAR),
    ("arrived_at", {}, {}, {"arrived_at": dt.datetime(9999, 12, 30, 10, tzinfo=dt.UTC)}, YEAR),
    ("arrived_at", {}, {}, {"arrived_at": BASE + dt.timedelta(hours=2)}, "This time is in the future."),
    *[(name, {}, {}, {name: text}, NOT_A_TIME) for name in TIMES for text in BAD_TIMES],
    *[(name, {}, {name: text}, {}, "Enter a number.") for name in ("quantity", "transport_temp_min_c",
                                                                   "transport_temp_max_c") for text in BAD_NUMBERS],
    ("quantity", {}, {"quantity": "35,5"}, {}, "Enter a number."),
]


@pytest.mark.parametrize(("field", "common", "numbers", "times", "message"), RECEIPT_CASES,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(RECEIPT_CASES)])
def test_a_receipt_is_refused_alike_at_the_page_and_the_api(client, users, sites, tech_api, field, common, numbers,
                                                            times, message):
    tech = refetch(users["technician"])
    add_full_panel(tech, donor_services.register_donor(tech, sites["BG"], RegisterDonor.of(donor_data())))
    values = RECEIPT | common
    amounts = {"quantity": 35.5, "transport_temp_min_c": 4, "transport_temp_max_c": 8} | numbers
    when = TIMES | times
    # A time given as text (one that cannot be read) is sent as typed through both doors.
    api = values | amounts | {name: value.isoformat() if isinstance(value, dt.datetime) else value
                              for name, value in when.items()} | {
        "quantity_unit": "g", "container_intact": True, "documents_complete": True}
    page = values | {name: str(value) for name, value in amounts.items()} | {
        name: _page_time(value) if isinstance(value, dt.datetime) else value for name, value in when.items()} | {
        "container_intact": "y", "documents_complete": "y"}
    _refused_alike(client, api=(f"{API}/materials", tech_api), page="/materials/receive", body=api, page_body=page,
                   field=field, message=message)


# --- quarantine decision: /materials/<din>/quarantine and POST /materials/<din>/quarantine-decision ---------------


QUARANTINE_CASES = [
    ("reason", {"reason": ""}, DECISION_REASON),
    ("reason", {"reason": "documents\x00received"}, CONTROL_MESSAGE),
    ("reason", {"reason": "documents \u202ereceived"}, BIDI_MESSAGE),
    ("reason", {"reason": LONG}, "Use at most 2000 characters (this has 10000)."),
]


@pytest.mark.parametrize(("field", "change", "message"), QUARANTINE_CASES,
                         ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(QUARANTINE_CASES)])
def test_a_quarantine_decision_is_refused_alike_at_the_page_and_the_api(client, users, sites, qa_api, field, change,
                                                                        message):
    tech = refetch(users["technician"])
    add_full_panel(tech, donor_services.register_donor(tech, sites["BG"], RegisterDonor.of(donor_data())))
    material = material_services.receive_material(tech, sites["BG"],
                                                  ReceiveMaterial.of(receipt_data(documents_complete=False)))
    din = material.din
    assert material.status == MaterialStatus.QUARANTINED
    body = {"reason": "documents received by e-mail"} | change
    _refused_alike(client, api=(f"{API}/materials/{din}/quarantine-decision", qa_api),
                   page=f"/materials/{din}/quarantine", body=body | {"decision": "release", "password": PASSWORD},
                   page_body=body | {"meaning": "RELEASED_FROM_QUARANTINE", "username": "qa.bg",
                                     "password": PASSWORD},
                   field=field, message=message, prefix="decision-")
    assert db.session.scalar(sa.select(SourceMaterial.status)) == MaterialStatus.QUARANTINED


def test_the_serology_form_preselects_no_result(client, donor):
    login(client, "technician.bg")
    page = client.get("/donors/BG/UC-0001").get_data(as_text=True)
    select = re.search(r'<select[^>]*name="result-result".*?</select>', page, re.S).group(0)
    options = re.findall(r'<option([^>]*)value="([^"]*)"', select)
    assert [value for _, value in options] == ["", "negative", "reactive", "indeterminate"]
    # The browser shows the first option: the empty one; none is marked selected.
    assert "selected" not in select

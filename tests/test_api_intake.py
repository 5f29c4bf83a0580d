"""The intake API: /donors (serology, consent, eligibility), /materials (receipt, quarantine, labels), /dins.

The API goes through the same services as the pages: these tests check that it refuses what the pages
refuse, that every write lands in the audit trail, and that site scoping turns other sites into 404s.
"""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from cellfactory import isbt128
from cellfactory.audit.models import AuditEntry
from cellfactory.auth.models import Role, User
from cellfactory.core.clock import utcnow
from cellfactory.donors import services as donor_services
from cellfactory.donors.commands import AddScreeningResult, RegisterDonor, WithdrawConsent
from cellfactory.donors.models import Donor, ScreeningResultRecord
from cellfactory.extensions import db
from cellfactory.materials import services as material_services
from cellfactory.materials.commands import ReceiveMaterial
from cellfactory.materials.models import MaterialStatus, SourceMaterial
from cellfactory.signatures.models import Signature
from tests.conftest import PASSWORD, enable_signing, make_user, pdf_text, refetch
from tests.intake_helpers import TODAY, add_full_panel, donor_data, receipt_data
from tests.test_api import assert_error, bearer, last_seq, new_token

API = "/api/v1"
DIN13 = "A999126000123"  # the DIN of receipt_data()'s scanned "=A99912600012300"
DIN_TEXT = "A9991 26 000123"


# --- fixtures and helpers ------------------------------------------------------------------------


@pytest.fixture
def tokens(users) -> dict[str, str]:
    return {key: new_token(user) for key, user in users.items()}


@pytest.fixture
def ids(users) -> dict[str, int]:
    return {key: user.id for key, user in users.items()}


@pytest.fixture
def auth(tokens):
    def headers(key: str) -> dict[str, str]:
        return bearer(tokens[key])

    return headers


@pytest.fixture
def fresh(ids):
    def load(key: str) -> User:
        return db.session.get(User, ids[key])

    return load


@pytest.fixture
def eligible_donor(users, sites) -> int:
    """UC-0001 at BG with a complete negative panel; returns its id."""
    tech = refetch(users["technician"])
    donor = donor_services.register_donor(tech, sites["BG"], RegisterDonor.of(donor_data()))
    add_full_panel(tech, donor)
    return donor.id


@pytest.fixture
def qa_signer(users) -> User:
    qa = refetch(users["qa"])
    enable_signing(qa)
    return qa


def api_donor(**overrides) -> dict:
    """donor_data() as the API takes it: the birth year a number."""
    return donor_data(**overrides)


def api_receipt(**overrides) -> dict:
    """receipt_data() as the API takes it: numbers as numbers, the unit beside the quantity, times with offset."""
    data = receipt_data()
    data.update(quantity=35.5, quantity_unit="g", transport_temp_min_c=4.0, transport_temp_max_c=8.5)
    data.update(overrides)
    return data


def result_body(test: str = "anti_hcv", result: str = "negative", **overrides) -> dict:
    body = {"test": test, "sample_date": TODAY.isoformat(), "sample_type": "serum", "result": result,
            "lab_reference": f"LAB-{test}-API", "tested_person": "donor", "kit_lot": "K-77"}
    body.update(overrides)
    return body


def new_entries(before: int) -> list[AuditEntry]:
    return list(db.session.scalars(sa.select(AuditEntry).where(AuditEntry.seq > before).order_by(AuditEntry.seq)))


def ok(response, status: int = 200) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    return response.get_json()


def receive(client, headers, **overrides) -> dict:
    return ok(client.post(f"{API}/materials", json=api_receipt(**overrides), headers=headers), 201)


def material_row(din13: str = DIN13) -> SourceMaterial | None:
    return db.session.scalar(sa.select(SourceMaterial).where(SourceMaterial.din == din13))


def wrong_check_character(din13: str) -> str:
    right = isbt128.din_check_character(din13)
    return next(c for c in "ABCDEFGHJK" if c != right)


# --- authentication and roles, every endpoint -----------------------------------------------------


ENDPOINTS = [
    ("get", "/donors"), ("post", "/donors"), ("get", "/donors/UC-0001"),
    ("post", "/donors/UC-0001/consent-withdrawal"), ("get", "/donors/UC-0001/screening"),
    ("post", "/donors/UC-0001/screening"), ("post", "/donors/UC-0001/screening/1/correction"),
    ("get", "/materials"), ("post", "/materials"), ("get", f"/materials/{DIN13}"),
    ("post", f"/materials/{DIN13}/quarantine-decision"), ("get", f"/materials/{DIN13}/label.pdf"),
    ("post", "/dins"),
]


@pytest.mark.parametrize(("method", "path"), ENDPOINTS)
def test_every_intake_endpoint_needs_a_token(client, users, eligible_donor, method, path):
    before = last_seq()
    response = getattr(client, method)(f"{API}{path}", json={})
    assert_error(response, 401, "unauthenticated")
    assert new_entries(before) == []


@pytest.mark.parametrize(("method", "path", "allowed"), [
    ("get", "/donors", {"technician", "qc_analyst", "qa", "qp", "auditor"}),
    ("get", "/materials", {"technician", "qc_analyst", "qa", "qp", "auditor"}),
    ("post", "/donors", {"technician"}),
    ("post", "/materials", {"technician"}),
    ("post", "/dins", {"technician"}),
    ("post", f"/materials/{DIN13}/quarantine-decision", {"qa"}),
    ("get", f"/materials/{DIN13}/label.pdf", {"technician", "qa"}),
])
def test_roles_declared_on_every_view(client, users, auth, ids, method, path, allowed):
    """Roles outside the declaration are refused (403, audited) before the body or the record is looked at."""
    for key in ("technician", "qc_analyst", "qa", "qp", "auditor", "admin"):
        before = last_seq()
        response = getattr(client, method)(f"{API}{path}", json={}, headers=auth(key))
        if key in allowed:
            assert response.status_code != 403, (key, response.get_data(as_text=True))
        else:
            assert_error(response, 403, "forbidden")
            assert [(e.action, e.actor_id) for e in new_entries(before)] == [("access_denied", ids[key])]


def test_intake_views_are_in_the_openapi_document(client):
    paths = client.get(f"{API}/openapi.json").get_json()["paths"]
    assert set(paths["/donors"]) == {"get", "post"}
    assert set(paths["/materials/{din}/quarantine-decision"]) == {"post"}
    assert "application/pdf" in paths["/materials/{din}/label.pdf"]["get"]["responses"]["200"]["content"]
    assert set(paths["/dins"]) == {"post"}


# --- donors --------------------------------------------------------------------------------------


def test_register_donor_at_the_users_single_site_is_audited(client, users, auth, ids):
    before = last_seq()
    body = ok(client.post(f"{API}/donors", json=api_donor(code="uc-0009", htlv_risk=True),
                          headers=auth("technician")), 201)
    assert body["code"] == "UC-0009" and body["site"] == "BG"
    assert body["birth_year"] == 1990 and body["sex"] == "F" and body["htlv_risk"] is True
    assert body["consent_withdrawn"] is False and body["consent_withdrawn_on"] is None
    assert body["registered_by"] == "technician.bg" and body["version"] == 1
    assert dt.datetime.fromisoformat(body["registered_at"]).utcoffset() == dt.timedelta(0)
    eligibility = body["eligibility"]
    assert eligibility["status"] == "incomplete" and eligibility["eligible"] is False
    assert eligibility["autologous_only"] is False
    assert "anti_htlv_1" in eligibility["required_tests"]  # the questionnaire answer made HTLV-I mandatory
    assert any("Anti-HIV-1,2" in r for r in eligibility["reasons"])
    donor = db.session.scalar(sa.select(Donor).where(Donor.code == "UC-0009"))
    assert donor.created_by_id == ids["technician"] and donor.site.code == "BG"
    created = [e for e in new_entries(before) if e.entity_type == "donor"]
    assert [(e.action, e.actor_id, e.entity_label) for e in created] == [("create", ids["technician"], "UC-0009")]
    assert created[0].changes["htlv_risk"] == [None, True]


def test_register_donor_site_rules(client, users, sites, auth, ids):
    both = make_user("technician.both", [(Role.TECHNICIAN, "BG"), (Role.TECHNICIAN, "MZ")])
    headers = bearer(new_token(both))
    assert_error(client.post(f"{API}/donors", json=api_donor(), headers=headers), 422, "invalid", "site")
    assert_error(client.post(f"{API}/donors", json={**api_donor(), "site": "ZZ"}, headers=headers),
                 422, "invalid", "site")
    assert ok(client.post(f"{API}/donors", json={**api_donor(), "site": "mz"}, headers=headers), 201)["site"] == "MZ"
    # A technician of BG naming MZ is refused by the service's own check, and nothing is saved.
    before = last_seq()
    assert_error(client.post(f"{API}/donors", json={**api_donor(code="UC-0002"), "site": "MZ"},
                             headers=auth("technician")), 403, "forbidden")
    assert db.session.scalar(sa.select(Donor).where(Donor.code == "UC-0002")) is None
    assert [e.action for e in new_entries(before)] == ["access_denied"]


@pytest.mark.parametrize(("overrides", "field"), [
    ({"code": "Maria Rossi"}, "code"),
    ({"birth_year": "1990"}, "birth_year"),
    ({"birth_year": 1990.5}, "birth_year"),
    ({"birth_year": True}, "birth_year"),
    ({"birth_year": 1850}, "birth_year"),
    ({"htlv_risk": "false"}, "htlv_risk"),
    ({"sex": "female"}, "sex"),
    ({"donation_kind": "cadaver"}, "donation_kind"),
    ({"donation_date": "22/11/2026"}, "donation_date"),
    ({"consent_date": (TODAY + dt.timedelta(days=2)).isoformat()}, "consent_date"),
    ({"consent_scope": ""}, "consent_scope"),
    ({"consent_form_version": None}, "consent_form_version"),
    ({"code": 12345}, "code"),
])
def test_register_donor_invalid_is_422_naming_the_field(client, users, auth, overrides, field):
    before = last_seq()
    error = assert_error(client.post(f"{API}/donors", json=api_donor(**overrides), headers=auth("technician")),
                         422, "invalid", field)
    assert error["fields"][field]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Donor)) == 0
    assert last_seq() == before


def test_register_donor_not_json_is_422(client, users, auth):
    assert_error(client.post(f"{API}/donors", data="code=UC-1", headers=auth("technician")), 422, "invalid")


def test_duplicate_donor_code_at_the_site_is_409(client, users, auth, eligible_donor):
    assert_error(client.post(f"{API}/donors", json=api_donor(), headers=auth("technician")), 409, "conflict", "code")
    # The same code at another site is another donor.
    assert ok(client.post(f"{API}/donors", json=api_donor(), headers=auth("technician_mz")), 201)["site"] == "MZ"


@pytest.fixture
def three_donors(users, sites, eligible_donor):
    """BG: UC-0001 eligible, AU-0002 autologous without serology; MZ: UC-0001 without serology."""
    donor_services.register_donor(refetch(users["technician"]), sites["BG"],
                                  RegisterDonor.of(donor_data(code="AU-0002", donor_type="autologous")))
    donor_services.register_donor(refetch(users["technician_mz"]), sites["MZ"], RegisterDonor.of(donor_data()))


def listed(client, headers, path: str = "/donors", **params) -> dict:
    return ok(client.get(f"{API}{path}", query_string=params, headers=headers))


def test_list_donors_scoped_filtered_with_eligibility(client, users, auth, three_donors):
    bg = listed(client, auth("technician"))
    assert set(bg) == {"items", "page", "per_page", "total"} and bg["total"] == 2
    assert [(d["site"], d["code"]) for d in bg["items"]] == [("BG", "AU-0002"), ("BG", "UC-0001")]
    by_code = {d["code"]: d for d in bg["items"]}
    assert by_code["UC-0001"]["eligibility"]["status"] == "eligible"
    assert by_code["UC-0001"]["eligibility"]["reasons"] == []
    autologous = by_code["AU-0002"]["eligibility"]
    assert autologous["status"] == "incomplete" and autologous["autologous_only"] is True
    assert autologous["reasons"] and by_code["AU-0002"]["consent_withdrawn"] is False

    network = auth("auditor_network")
    assert listed(client, network)["total"] == 3
    assert [(d["site"], d["code"]) for d in listed(client, network, site="mz")["items"]] == [("MZ", "UC-0001")]
    assert [d["code"] for d in listed(client, network, type="autologous")["items"]] == ["AU-0002"]
    assert sorted(d["site"] for d in listed(client, network, code="uc-0001")["items"]) == ["BG", "MZ"]
    page = listed(client, network, per_page=1, page=2)
    assert page["total"] == 3 and len(page["items"]) == 1 and page["per_page"] == 1
    # A site the user cannot see lists nothing.
    assert listed(client, auth("technician"), site="MZ") == {"items": [], "page": 1, "per_page": 50, "total": 0}


@pytest.mark.parametrize(("params", "field"), [
    ({"type": "cadaveric"}, "type"), ({"site": "ZZ"}, "site"), ({"per_page": 201}, "per_page"),
])
def test_list_donors_bad_filters_are_422(client, users, auth, params, field):
    assert_error(client.get(f"{API}/donors", query_string=params, headers=auth("technician")), 422, "invalid", field)


def test_get_donor_scoping_and_same_code_at_two_sites(client, users, auth, three_donors):
    body = ok(client.get(f"{API}/donors/uc-0001", headers=auth("technician")))
    assert body["site"] == "BG" and body["eligibility"]["status"] == "eligible"
    # MZ's technician sees MZ's UC-0001 only; BG's AU-0002 does not exist for them.
    assert ok(client.get(f"{API}/donors/UC-0001", headers=auth("technician_mz")))["site"] == "MZ"
    assert_error(client.get(f"{API}/donors/AU-0002", headers=auth("technician_mz")), 404, "not_found")
    assert_error(client.get(f"{API}/donors/UC-0001?site=BG", headers=auth("technician_mz")), 404, "not_found")
    assert_error(client.get(f"{API}/donors/NOBODY-1", headers=auth("technician")), 404, "not_found")
    # The network auditor sees both UC-0001: without a site, 409 asking for it.
    network = auth("auditor_network")
    error = assert_error(client.get(f"{API}/donors/UC-0001", headers=network), 409, "conflict", "site")
    assert "BG" in error["message"] and "MZ" in error["message"]
    assert_error(client.get(f"{API}/donors/UC-0001/screening", headers=network), 409, "conflict", "site")
    assert ok(client.get(f"{API}/donors/UC-0001?site=MZ", headers=network))["site"] == "MZ"
    assert ok(client.get(f"{API}/donors/UC-0001?site=bg", headers=network))["eligibility"]["status"] == "eligible"
    assert_error(client.get(f"{API}/donors/UC-0001?site=ZZ", headers=network), 404, "not_found")
    # Administrators do not read GMP records.
    assert_error(client.get(f"{API}/donors/UC-0001", headers=auth("admin")), 403, "forbidden")


def test_consent_withdrawal(client, users, auth, ids, eligible_donor):
    headers = auth("technician")
    path = f"{API}/donors/UC-0001/consent-withdrawal"
    assert_error(client.post(path, json={"withdrawn_on": TODAY.isoformat()}, headers=headers), 422, "invalid",
                 "reason")
    future = (TODAY + dt.timedelta(days=1)).isoformat()
    assert_error(client.post(path, json={"withdrawn_on": future, "reason": "letter"}, headers=headers),
                 422, "invalid", "withdrawn_on")
    assert_error(client.post(path, json={"withdrawn_on": "soon", "reason": "letter"}, headers=headers),
                 422, "invalid", "withdrawn_on")
    # Another site's technician cannot even find the donor.
    assert_error(client.post(path, json={"withdrawn_on": TODAY.isoformat(), "reason": "x"},
                             headers=auth("technician_mz")), 404, "not_found")
    before = last_seq()
    body = ok(client.post(path, json={"withdrawn_on": TODAY.isoformat(), "reason": "donor's written withdrawal"},
                          headers=headers))
    assert body["consent_withdrawn"] is True and body["consent_withdrawn_on"] == TODAY.isoformat()
    assert body["eligibility"]["status"] == "ineligible"
    assert any("Consent withdrawn" in r for r in body["eligibility"]["reasons"])
    update = [e for e in new_entries(before) if e.entity_type == "donor"]
    assert [(e.action, e.actor_id, e.reason) for e in update] == [("update", ids["technician"],
                                                                   "donor's written withdrawal")]
    assert update[0].changes["consent_withdrawn_on"] == [None, TODAY.isoformat()]
    assert_error(client.post(path, json={"withdrawn_on": TODAY.isoformat(), "reason": "again"}, headers=headers),
                 409, "conflict")
    # The withdrawal blocks further serology and any receipt, as on the pages.
    assert_error(client.post(f"{API}/donors/UC-0001/screening", json=result_body(), headers=headers), 409, "conflict")
    assert_error(client.post(f"{API}/materials", json=api_receipt(), headers=headers), 409, "conflict")
    assert material_row() is None


def test_screening_results_and_correction(client, users, auth, ids, eligible_donor):
    headers = auth("technician")
    screening = ok(client.get(f"{API}/donors/UC-0001/screening", headers=auth("qp")))
    assert screening["donor"] == "UC-0001" and screening["site"] == "BG"
    assert len(screening["results"]) == 5 and screening["eligibility"]["status"] == "eligible"
    assert all(r["current"] and r["superseded_by"] is None for r in screening["results"])

    before = last_seq()
    added = ok(client.post(f"{API}/donors/UC-0001/screening", json=result_body("anti_htlv_1"), headers=headers), 201)
    assert (added["test"], added["result"], added["sample_type"], added["kit_lot"]) == \
        ("anti_htlv_1", "negative", "serum", "K-77")
    assert added["entered_by"] == "technician.bg" and added["current"] is True
    created = [e for e in new_entries(before) if e.entity_type == "screening_result"]
    assert [(e.action, e.actor_id, e.entity_id) for e in created] == [("create", ids["technician"],
                                                                       str(added["id"]))]

    original = next(r for r in screening["results"] if r["test"] == "anti_hcv")
    path = f"{API}/donors/UC-0001/screening/{original['id']}/correction"
    assert_error(client.post(path, json=result_body(result="reactive"), headers=headers), 422, "invalid", "reason")
    assert_error(client.post(path, json={**result_body(result="reactive"), "reason": "  "}, headers=headers),
                 422, "invalid", "reason")
    before = last_seq()
    replacement = ok(client.post(path, json={**result_body(result="reactive", sample_type="plasma"),
                                             "reason": "transcription error: the lab report says reactive"},
                                 headers=headers), 201)
    assert replacement["result"] == "reactive" and replacement["id"] != original["id"]
    entries = [e for e in new_entries(before) if e.entity_type == "screening_result"]
    assert {(e.action, e.entity_id) for e in entries} == {("create", str(replacement["id"])),
                                                          ("update", str(original["id"]))}
    assert [e.reason for e in entries if e.action == "update"] == ["transcription error: the lab report says reactive"]
    assert {e.actor_id for e in entries} == {ids["technician"]}

    after = ok(client.get(f"{API}/donors/UC-0001/screening", headers=headers))
    old = next(r for r in after["results"] if r["id"] == original["id"])
    assert old["superseded_by"] == replacement["id"] and old["current"] is False
    assert old["correction_reason"] == "transcription error: the lab report says reactive"
    assert len(after["results"]) == 7
    assert after["eligibility"]["status"] == "ineligible"
    assert "Anti-HCV-Ab: reactive." in after["eligibility"]["reasons"]
    # A superseded result is not corrected twice.
    assert_error(client.post(path, json={**result_body(), "reason": "again"}, headers=headers), 409, "conflict")


def test_screening_refuses_what_the_pages_refuse(client, users, auth, sites, eligible_donor):
    headers = auth("technician")
    before = last_seq()
    error = assert_error(client.post(f"{API}/donors/UC-0001/screening",
                                     json=result_body(sample_type="whole blood"), headers=headers),
                         422, "invalid", "sample_type")
    assert "serum or plasma" in error["fields"]["sample_type"]
    assert_error(client.post(f"{API}/donors/UC-0001/screening", json=result_body(test="alt"), headers=headers),
                 422, "invalid", "test")
    future = (TODAY + dt.timedelta(days=3)).isoformat()
    assert_error(client.post(f"{API}/donors/UC-0001/screening", json=result_body(sample_date=future),
                             headers=headers), 422, "invalid", "sample_date")
    missing = {k: v for k, v in result_body().items() if k != "lab_reference"}
    assert_error(client.post(f"{API}/donors/UC-0001/screening", json=missing, headers=headers),
                 422, "invalid", "lab_reference")
    assert last_seq() == before
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ScreeningResultRecord)) == 5
    # Another site's technician: the donor is not found; a QA of the site: refused by role.
    assert_error(client.post(f"{API}/donors/UC-0001/screening", json=result_body(), headers=auth("technician_mz")),
                 404, "not_found")
    assert_error(client.post(f"{API}/donors/UC-0001/screening", json=result_body(), headers=auth("qa")),
                 403, "forbidden")


def test_correction_of_a_result_of_another_donor_is_404(client, users, auth, sites, eligible_donor):
    tech = refetch(users["technician"])
    other = donor_services.register_donor(tech, refetch(sites["BG"]), RegisterDonor.of(donor_data(code="UC-0002")))
    foreign = donor_services.add_screening_result(tech, other, AddScreeningResult.of(result_body()))
    foreign_id = foreign.id
    body = {**result_body(), "reason": "wrong donor"}
    assert_error(client.post(f"{API}/donors/UC-0001/screening/{foreign_id}/correction", json=body,
                             headers=auth("technician")), 404, "not_found")
    assert_error(client.post(f"{API}/donors/UC-0001/screening/999999/correction", json=body,
                             headers=auth("technician")), 404, "not_found")
    assert_error(client.post(f"{API}/donors/UC-0001/screening/abc/correction", json=body,
                             headers=auth("technician")), 404, "not_found")
    assert db.session.get(ScreeningResultRecord, foreign_id).superseded_by_id is None


# --- materials: receipt --------------------------------------------------------------------------


def test_conforming_receipt_is_accepted_and_audited(client, users, auth, ids, eligible_donor):
    before = last_seq()
    body = receive(client, auth("technician"))
    assert body["din"] == DIN13 and body["eye_readable"] == DIN_TEXT
    assert body["check_character"] == isbt128.din_check_character(DIN13)
    assert body["status"] == "accepted" and body["decision_reasons"] == []
    assert body["site"] == "BG" and body["donor"] == "UC-0001" and body["material_type"] == "umbilical_cord"
    assert body["quantity"] == 35.5 and body["quantity_unit"] == "g"
    assert body["transport_temp_min_c"] == 4.0 and body["transport_temp_max_c"] == 8.5
    assert body["transport_hours"] == 4.0 and body["receipt_limits_version"] == 1
    for name in ("collected_at", "transport_started_at", "arrived_at", "received_at"):
        assert dt.datetime.fromisoformat(body[name]).utcoffset() == dt.timedelta(0), name
    assert body["eligibility"]["status"] == "eligible" and body["consent_withdrawn"] is False
    assert body["autologous_only"] is False and body["signatures"] == [] and body["label_statements"] == []
    assert body["received_by"] == "technician.bg"
    row = material_row()
    assert row.status == MaterialStatus.ACCEPTED and row.received_by_id == ids["technician"]
    created = [e for e in new_entries(before) if e.entity_type == "source_material"]
    assert [(e.action, e.actor_id, e.entity_label) for e in created] == [("create", ids["technician"], DIN13)]


def test_receipt_times_with_other_offsets_are_stored_utc(client, users, auth, eligible_donor):
    now = utcnow().replace(microsecond=0)
    rome = dt.timezone(dt.timedelta(hours=1))
    body = receive(client, auth("technician"),
                   collected_at=(now - dt.timedelta(hours=6)).astimezone(rome).isoformat(),
                   transport_started_at=(now - dt.timedelta(hours=5)).isoformat().replace("+00:00", "Z"),
                   arrived_at=(now - dt.timedelta(hours=1)).astimezone(dt.timezone(dt.timedelta(hours=-5)))
                   .isoformat())
    assert dt.datetime.fromisoformat(body["collected_at"]) == now - dt.timedelta(hours=6)
    assert body["collected_at"].endswith("+00:00")
    assert body["transport_hours"] == 4.0


@pytest.mark.parametrize("field", ["collected_at", "transport_started_at", "arrived_at"])
def test_receipt_time_without_offset_is_422(client, users, auth, eligible_donor, field):
    before = last_seq()
    naive = (utcnow() - dt.timedelta(hours=2)).replace(tzinfo=None).isoformat()
    error = assert_error(client.post(f"{API}/materials", json=api_receipt(**{field: naive}),
                                     headers=auth("technician")), 422, "invalid", field)
    assert "offset" in error["fields"][field]
    assert material_row() is None and last_seq() == before


def test_receipt_refuses_a_wrong_din_check_character(client, users, auth, eligible_donor):
    typed = f"{DIN_TEXT} {wrong_check_character(DIN13)}"
    error = assert_error(client.post(f"{API}/materials", json=api_receipt(din=typed), headers=auth("technician")),
                         422, "invalid", "din")
    assert "check character is wrong" in error["fields"]["din"]
    # The right check character is accepted.
    right = f"{DIN_TEXT} {isbt128.din_check_character(DIN13)}"
    assert receive(client, auth("technician"), din=right)["din"] == DIN13


def test_receipt_refuses_an_unknown_facility(client, users, auth, eligible_donor):
    error = assert_error(client.post(f"{API}/materials", json=api_receipt(din="=G12341765432100"),
                                     headers=auth("technician")), 422, "invalid", "din")
    assert "not a known facility" in error["fields"]["din"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(SourceMaterial)) == 0


def test_temperature_out_of_range_quarantines(client, users, auth, eligible_donor):
    body = receive(client, auth("technician"), transport_temp_max_c=31.0)
    assert body["status"] == "quarantined" and body["transport_temp_max_c"] == 31.0
    assert any("31.0" in r and "outside the allowed" in r for r in body["decision_reasons"])
    assert body["label_statements"] == ["QUARANTINE - NOT RELEASED FOR USE"]
    with pytest.raises(Exception, match="quarantined"):
        material_services.check_usable_for_batch(material_row())


def test_broken_container_is_rejected(client, users, auth, eligible_donor):
    body = receive(client, auth("technician"), container_intact=False)
    assert body["status"] == "rejected" and "Container not intact." in body["decision_reasons"]
    assert body["label_statements"] == ["REJECTED - DO NOT USE"]


def test_reactive_allogeneic_donor_material_is_rejected(client, users, auth, sites):
    tech = refetch(users["technician"])
    donor = donor_services.register_donor(tech, sites["BG"], RegisterDonor.of(donor_data()))
    add_full_panel(tech, donor, result="reactive")
    body = receive(client, auth("technician"))
    assert body["status"] == "rejected"
    assert any(r.startswith("Donor ineligible") for r in body["decision_reasons"])
    assert body["eligibility"]["status"] == "ineligible"


def test_autologous_untested_donor_is_quarantined(client, users, auth, sites):
    # Autologous material to be cultured or stored is tested too (Dir. 2006/17/EC Annex I 2.1.1).
    donor_services.register_donor(refetch(users["technician"]), sites["BG"],
                                  RegisterDonor.of(donor_data(donor_type="autologous")))
    body = receive(client, auth("technician"))
    assert body["status"] == "quarantined" and body["autologous_only"] is True
    assert any("must be tested" in r for r in body["decision_reasons"])
    assert body["eligibility"]["autologous_only"] is True
    assert "FOR AUTOLOGOUS USE ONLY" in body["label_statements"]


def test_autologous_reactive_donor_is_accepted_as_a_biological_hazard(client, users, auth, sites):
    tech = refetch(users["technician"])
    donor = donor_services.register_donor(tech, sites["BG"], RegisterDonor.of(donor_data(donor_type="autologous")))
    add_full_panel(tech, donor, result="reactive")
    body = receive(client, auth("technician"))
    assert body["status"] == "accepted" and body["autologous_only"] is True
    assert body["label_statements"] == ["FOR AUTOLOGOUS USE ONLY", "BIOLOGICAL HAZARD"]


def test_a_din_is_received_once(client, users, auth, eligible_donor):
    receive(client, auth("technician"))
    before = last_seq()
    error = assert_error(client.post(f"{API}/materials", json=api_receipt(), headers=auth("technician")),
                         409, "conflict", "din")
    assert "never used twice" in error["message"]
    assert last_seq() == before


def test_receipt_with_an_allocated_din(client, users, auth, eligible_donor):
    body = receive(client, auth("technician"), din=None, allocate_din=True)
    year = f"{utcnow().year % 100:02d}"
    assert body["din"] == f"A9991{year}000001"
    assert material_row(body["din"]).status == MaterialStatus.ACCEPTED
    allocated = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "allocate_din")).all()
    assert [e.changes for e in allocated] == [{"din": body["din"]}]


@pytest.mark.parametrize(("overrides", "fields"), [
    ({"quantity": "35.5"}, {"quantity"}),
    ({"transport_temp_min_c": "4"}, {"transport_temp_min_c"}),
    ({"transport_temp_max_c": True}, {"transport_temp_max_c"}),
    ({"container_intact": "false"}, {"container_intact"}),
    ({"documents_complete": 1}, {"documents_complete"}),
    ({"container_intact": None}, {"container_intact"}),
    ({"quantity_unit": None}, {"quantity_unit"}),
    ({"quantity_unit": "mL"}, {"quantity_unit"}),
    ({"quantity": -3}, {"quantity"}),
    ({"quantity": 0}, {"quantity"}),
    ({"transport_temp_min_c": 9, "transport_temp_max_c": 4}, {"transport_temp_max_c"}),
    ({"material_type": "placenta"}, {"material_type"}),
    ({"donor": "UNKNOWN-9"}, {"donor"}),
    ({"collected_at": "yesterday"}, {"collected_at"}),
    ({"arrived_at": "2000-01-01T00:00:00+00:00"}, {"arrived_at"}),
    ({"collection_centre": "  "}, {"collection_centre"}),
    ({"din": ""}, {"din"}),
    ({"din": 123}, {"din"}),
    ({"allocate_din": True}, {"din", "allocate_din"}),
    ({"allocate_din": "yes"}, {"allocate_din"}),
    ({"site": "ZZ"}, {"site"}),
])
def test_receipt_invalid_is_422_naming_the_fields(client, users, auth, eligible_donor, overrides, fields):
    before = last_seq()
    response = client.post(f"{API}/materials", json=api_receipt(**overrides), headers=auth("technician"))
    assert_error(response, 422, "invalid", *fields)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(SourceMaterial)) == 0
    assert last_seq() == before


def test_receipt_site_scoping(client, users, sites, auth, eligible_donor):
    # MZ's technician receiving for BG: refused by the service; for MZ, BG's donor does not exist there.
    assert_error(client.post(f"{API}/materials", json={**api_receipt(), "site": "BG"},
                             headers=auth("technician_mz")), 403, "forbidden")
    assert_error(client.post(f"{API}/materials", json=api_receipt(din="=A99922600012300"),
                             headers=auth("technician_mz")), 422, "invalid", "donor")
    assert db.session.scalar(sa.select(sa.func.count()).select_from(SourceMaterial)) == 0


# --- materials: reading --------------------------------------------------------------------------


@pytest.fixture
def received(users, sites, eligible_donor) -> dict[str, str]:
    """BG: accepted, quarantined (documents missing), rejected; MZ: one accepted of an autologous donor."""
    tech = refetch(users["technician"])
    bg = refetch(sites["BG"])
    dins = {}
    for status, seq, overrides in (("accepted", 1, {}), ("quarantined", 2, {"documents_complete": False}),
                                   ("rejected", 3, {"container_intact": False})):
        din = isbt128.build_din("A9991", 26, seq)
        material_services.receive_material(tech, bg, ReceiveMaterial.of(receipt_data(din=din.din13, **overrides)))
        dins[status] = din.din13
    tech_mz = refetch(users["technician_mz"])
    autologous = donor_services.register_donor(tech_mz, refetch(sites["MZ"]),
                                               RegisterDonor.of(donor_data(code="AU-0100", donor_type="autologous")))
    add_full_panel(tech_mz, autologous, result="reactive")  # tested: accepted for autologous use only
    mz = isbt128.build_din("A9992", 26, 1).din13
    material_services.receive_material(tech_mz, refetch(sites["MZ"]),
                                       ReceiveMaterial.of(receipt_data(donor_code="AU-0100", din=mz,
                                                                       material_type="cord_blood",
                                                                       anticoagulant="CPD")))
    dins["mz"] = mz
    return dins


def test_list_materials_scoped_and_filtered(client, users, auth, received):
    bg = listed(client, auth("technician"), "/materials")
    assert bg["total"] == 3 and {m["din"] for m in bg["items"]} == {received["accepted"], received["quarantined"],
                                                                    received["rejected"]}
    network = auth("auditor_network")
    assert listed(client, network, "/materials")["total"] == 4
    assert [m["din"] for m in listed(client, network, "/materials", status="quarantined")["items"]] == \
        [received["quarantined"]]
    only_mz = listed(client, network, "/materials", site="MZ")["items"]
    assert [(m["din"], m["quantity_unit"], m["autologous_only"]) for m in only_mz] == [(received["mz"], "mL", True)]
    assert [m["din"] for m in listed(client, network, "/materials", type="cord_blood")["items"]] == [received["mz"]]
    assert [m["din"] for m in listed(client, network, "/materials", donor="au-0100")["items"]] == [received["mz"]]
    assert listed(client, network, "/materials", donor="UC-0001")["total"] == 3
    assert listed(client, auth("technician_mz"), "/materials", status="quarantined")["total"] == 0
    for params, field in (({"status": "released"}, "status"), ({"type": "placenta"}, "type"),
                          ({"site": "XX"}, "site"), ({"page": 0}, "page")):
        assert_error(client.get(f"{API}/materials", query_string=params, headers=network), 422, "invalid", field)


def test_get_material_by_din_forms_and_scoping(client, users, auth, received):
    din = received["quarantined"]
    body = ok(client.get(f"{API}/materials/{din}", headers=auth("qc_analyst")))
    assert body["din"] == din and body["status"] == "quarantined"
    assert body["decision_reasons"] == ["Accompanying documents incomplete."]
    assert body["eligibility"]["status"] == "eligible" and body["signatures"] == []
    # Lower case and the typed form with its check character find the same material.
    assert ok(client.get(f"{API}/materials/{din.lower()}", headers=auth("technician")))["din"] == din
    typed = f"{isbt128.format_din(din)} {isbt128.din_check_character(din)}"
    assert ok(client.get(f"{API}/materials/{typed}", headers=auth("technician")))["din"] == din
    # A wrong check character is invalid input; another site's material and an unknown DIN are not found.
    assert_error(client.get(f"{API}/materials/{isbt128.format_din(din)} {wrong_check_character(din)}",
                            headers=auth("technician")), 422, "invalid", "din")
    assert_error(client.get(f"{API}/materials/{din}", headers=auth("technician_mz")), 404, "not_found")
    assert_error(client.get(f"{API}/materials/{received['mz']}", headers=auth("technician")), 404, "not_found")
    assert_error(client.get(f"{API}/materials/{isbt128.build_din('A9991', 26, 99).din13}",
                            headers=auth("technician")), 404, "not_found")
    assert_error(client.get(f"{API}/materials/{din}", headers=auth("admin")), 403, "forbidden")


def test_material_shows_the_donors_withdrawn_consent(client, users, auth, received):
    donor_services.withdraw_consent(refetch(users["technician"]),
                                    donor_services.get_donor(refetch(users["technician"]), None, "UC-0001"),
                                    WithdrawConsent.of({"withdrawn_on": TODAY.isoformat(),
                                                        "reason": "withdrawn by phone, letter follows"}))
    body = ok(client.get(f"{API}/materials/{received['accepted']}", headers=auth("technician")))
    assert body["consent_withdrawn"] is True and body["eligibility"]["status"] == "ineligible"
    assert "CONSENT WITHDRAWN - DO NOT USE" in body["label_statements"]


# --- quarantine decision -------------------------------------------------------------------------


def decision(client, headers, din: str, **body):
    payload = {"decision": "release", "reason": "documents received by e-mail", "password": PASSWORD, **body}
    return client.post(f"{API}/materials/{din}/quarantine-decision", json=payload, headers=headers)


def test_qa_releases_quarantined_material_with_a_signature(client, users, auth, ids, received, qa_signer):
    din = received["quarantined"]
    before = last_seq()
    body = ok(decision(client, auth("qa"), din, meaning="released from quarantine"))
    assert body["status"] == "accepted" and body["released_by"] == "qa.bg"
    assert body["release_reason"] == "documents received by e-mail" and body["released_at"]
    [signature] = body["signatures"]
    assert signature["meaning"] == "Released from quarantine" and signature["username"] == "qa.bg"
    assert signature["status"] == "valid" and signature["comment"] == "documents received by e-mail"
    assert dt.datetime.fromisoformat(signature["signed_at"]).utcoffset() == dt.timedelta(0)
    row = material_row(din)
    assert row.status == MaterialStatus.ACCEPTED and row.released_by_id == ids["qa"]
    stored = db.session.scalar(sa.select(Signature).where(Signature.entity_type == "source_material"))
    assert stored.signer_id == ids["qa"] and stored.entity_id == str(row.id)
    entries = new_entries(before)
    update = [e for e in entries if e.entity_type == "source_material"]
    assert [(e.action, e.actor_id, e.reason) for e in update] == [("update", ids["qa"],
                                                                   "documents received by e-mail")]
    assert update[0].changes["status"] == ["quarantined", "accepted"]
    assert any(e.entity_type == "signature" and e.action == "create" for e in entries)
    # Reading the material shows the signature, verified.
    again = ok(client.get(f"{API}/materials/{din}", headers=auth("auditor_network")))
    assert [(s["meaning"], s["status"]) for s in again["signatures"]] == [("Released from quarantine", "valid")]
    # Decided once: a second decision is a conflict.
    assert_error(decision(client, auth("qa"), din), 409, "conflict")


def test_qa_rejects_quarantined_material(client, users, auth, received, qa_signer):
    body = ok(decision(client, auth("qa"), received["quarantined"], decision="reject",
                       reason="documents never arrived"))
    assert body["status"] == "rejected"
    assert [s["meaning"] for s in body["signatures"]] == ["Rejected after quarantine"]
    assert "REJECTED - DO NOT USE" in body["label_statements"]


def test_wrong_signing_password_is_401_and_counted(client, users, auth, ids, fresh, received, qa_signer):
    din = received["quarantined"]
    before = last_seq()
    error = assert_error(decision(client, auth("qa"), din, password="not-my-password"), 401, "unauthenticated",
                         "password")
    assert "incorrect" in error["message"].lower()
    assert fresh("qa").failed_login_count == 1
    assert [(e.action, e.actor_id) for e in new_entries(before)] == [("signature_failed", ids["qa"])]
    assert material_row(din).status == MaterialStatus.QUARANTINED
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Signature).where(
        Signature.entity_type == "source_material")) == 0
    assert_error(decision(client, auth("qa"), din, password="still-wrong"), 401, "unauthenticated", "password")
    assert fresh("qa").failed_login_count == 2


@pytest.mark.parametrize(("body", "fields"), [
    ({"decision": "maybe"}, {"decision"}),
    ({"decision": None}, {"decision"}),
    ({"reason": ""}, {"reason"}),
    ({"password": ""}, {"password"}),
    ({"meaning": "Rejected after quarantine"}, {"meaning"}),
    ({"decision": "reject", "meaning": "Approved"}, {"meaning"}),
    ({"reason": ["late"]}, {"reason"}),
])
def test_quarantine_decision_invalid_is_422(client, users, auth, received, qa_signer, body, fields):
    assert_error(decision(client, auth("qa"), received["quarantined"], **body), 422, "invalid", *fields)
    assert material_row(received["quarantined"]).status == MaterialStatus.QUARANTINED


def test_quarantine_decision_conflicts_and_scope(client, users, sites, auth, received, qa_signer):
    assert_error(decision(client, auth("qa"), received["accepted"]), 409, "conflict")
    assert_error(decision(client, auth("qa"), received["rejected"]), 409, "conflict")
    assert_error(decision(client, auth("qa"), received["mz"]), 404, "not_found")
    assert_error(decision(client, auth("technician"), received["quarantined"]), 403, "forbidden")
    qa_mz = make_user("qa.mz", [(Role.QA, "MZ")], signing=True)
    assert_error(decision(client, bearer(new_token(qa_mz)), received["quarantined"]), 404, "not_found")
    assert material_row(received["quarantined"]).status == MaterialStatus.QUARANTINED


def test_quarantine_decision_needs_signing_set_up(client, users, auth, received):
    error = assert_error(decision(client, auth("qa"), received["quarantined"]), 403, "forbidden")
    assert "cannot sign yet" in error["message"]
    assert material_row(received["quarantined"]).status == MaterialStatus.QUARANTINED


def test_quarantine_release_refused_once_consent_is_withdrawn(client, users, auth, received, qa_signer):
    tech = refetch(users["technician"])
    donor_services.withdraw_consent(tech, donor_services.get_donor(tech, None, "UC-0001"),
                                    WithdrawConsent.of({"withdrawn_on": TODAY.isoformat(), "reason": "withdrawn"}))
    error = assert_error(decision(client, auth("qa"), received["quarantined"]), 409, "conflict")
    assert "consent" in error["message"].lower()


# --- labels --------------------------------------------------------------------------------------


def test_label_pdf_holds_the_eye_readable_din_and_is_audited(client, users, auth, ids, received):
    din = received["quarantined"]
    before = last_seq()
    response = client.get(f"{API}/materials/{din}/label.pdf", headers=auth("technician"))
    assert response.status_code == 200
    assert response.mimetype == "application/pdf"
    text = pdf_text(response.data)
    assert isbt128.format_din(din) in text and isbt128.din_check_character(din) in text
    assert "QUARANTINE" in text and "Umbilical cord" in text and "UC-0001" in text
    printed = [e for e in new_entries(before) if e.action == "print"]
    assert [(e.actor_id, e.entity_label, e.changes["reprint"]) for e in printed] == [(ids["technician"], din, False)]

    before = last_seq()
    reprint = client.get(f"{API}/materials/{din}/label.pdf?reprint=1", headers=auth("qa"))
    assert reprint.status_code == 200 and isbt128.format_din(din) in pdf_text(reprint.data)
    printed = [e for e in new_entries(before) if e.action == "print"]
    assert [(e.actor_id, e.changes["reprint"]) for e in printed] == [(ids["qa"], True)]


def test_label_pdf_refusals(client, users, auth, received):
    din = received["accepted"]
    assert_error(client.get(f"{API}/materials/{din}/label.pdf", headers=auth("qc_analyst")), 403, "forbidden")
    assert_error(client.get(f"{API}/materials/{din}/label.pdf", headers=auth("technician_mz")), 404, "not_found")
    assert_error(client.get(f"{API}/materials/{din}/label.pdf?reprint=yes", headers=auth("technician")),
                 422, "invalid", "reprint")
    assert_error(client.get(f"{API}/materials/{din}/label.pdf"), 401, "unauthenticated")


# --- DIN allocation ------------------------------------------------------------------------------


def test_allocate_din(client, users, auth, ids):
    before = last_seq()
    first = ok(client.post(f"{API}/dins", headers=auth("technician")), 201)
    year = f"{utcnow().year % 100:02d}"
    assert first["din"] == f"A9991{year}000001" and first["site"] == "BG"
    assert first["check_character"] == isbt128.din_check_character(first["din"])
    assert first["eye_readable"] == f"A9991 {year} 000001"
    assert first["data_structure"] == f"={first['din']}00"
    assert isbt128.parse_din(first["data_structure"]).din13 == first["din"]
    second = ok(client.post(f"{API}/dins", json={"site": "bg"}, headers=auth("technician")), 201)
    assert int(second["din"][7:]) == int(first["din"][7:]) + 1
    events = [e for e in new_entries(before) if e.action == "allocate_din"]
    assert [(e.actor_id, e.changes["din"]) for e in events] == [(ids["technician"], first["din"]),
                                                                (ids["technician"], second["din"])]


def test_allocate_din_site_rules(client, users, sites, auth):
    both = make_user("technician.both", [(Role.TECHNICIAN, "BG"), (Role.TECHNICIAN, "MZ")])
    headers = bearer(new_token(both))
    assert_error(client.post(f"{API}/dins", json={}, headers=headers), 422, "invalid", "site")
    assert ok(client.post(f"{API}/dins", json={"site": "MZ"}, headers=headers), 201)["din"].startswith("A9992")
    before = last_seq()
    assert_error(client.post(f"{API}/dins", json={"site": "MZ"}, headers=auth("technician")), 403, "forbidden")
    assert [e.action for e in new_entries(before)] == ["access_denied"]
    assert_error(client.post(f"{API}/dins", json={"site": 7}, headers=auth("technician")), 422, "invalid", "site")
    assert_error(client.post(f"{API}/dins", data="[1]", content_type="application/json",
                             headers=auth("technician")), 422, "invalid")

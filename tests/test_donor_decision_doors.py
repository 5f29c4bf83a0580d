"""Issue 13 through every door: the QA decision pages and the API endpoints call one service each, refuse the
same bad input with the same field and message, and save nothing; the derived state shows on the page, in the API
and in the PDF batch record."""

from __future__ import annotations

import datetime as dt
import html

import pytest
import sqlalchemy as sa

from cellfactory.auth.models import User
from cellfactory.donors import services as donor_services
from cellfactory.donors.commands import AddScreeningResult, DecideRiskAssessment, RegisterDonor
from cellfactory.donors.models import Donor, ScreeningDecision, ScreeningTest
from cellfactory.extensions import db
from tests.batch_helpers import batch_start, start_command
from tests.conftest import PASSWORD, enable_signing, login, refetch
from tests.intake_helpers import TODAY, donor_data
from tests.test_api import API, bearer, new_token


def _donor(users, sites, **results) -> Donor:
    tech = refetch(users["technician"])
    donor = donor_services.register_donor(tech, sites["BG"],
                                          RegisterDonor.of(donor_data(birth_date="1990-05-17", birth_year=None)))
    for test in (ScreeningTest.HIV, ScreeningTest.HBSAG, ScreeningTest.ANTI_HBC, ScreeningTest.HCV,
                 ScreeningTest.SYPHILIS_TREPONEMAL):
        donor_services.add_screening_result(tech, donor, AddScreeningResult.of({
            "test": test.value, "sample_date": TODAY.isoformat(), "sample_type": "serum",
            "result": results.get(test.name, "negative"), "lab_reference": f"LAB-{test.value}"}))
    return refetch(donor)


def _result_id(donor: Donor, test: ScreeningTest) -> int:
    return next(r.id for r in donor.current_results if r.test == test)


@pytest.fixture
def qa(users):
    enable_signing(refetch(users["qa"]))
    return refetch(users["qa"])


def _count() -> int:
    return db.session.scalar(sa.select(sa.func.count()).select_from(ScreeningDecision))


# (action, reactive test, page form, API body, field, message): each bad input once through the page, once the API.
CASES = {
    "confirmatory": ("confirmatory", "HCV",
                     {"meaning": "SCREENING_CLEARED", "reason": "false reaction", "confirmatory_results": " "},
                     {"reason": "false reaction", "confirmatory_results": " "}, "confirmatory_results",
                     "Enter the confirmatory tests and their results (method, lab, result)."),
    "assessment": ("assessment", "ANTI_HBC", {"meaning": "DONATION_ALLOWED", "reason": " "},
                   {"allowed": True, "reason": " "}, "reason", "Give the reason for the decision."),
}
API_PATH = {"confirmatory": "confirmatory", "assessment": "risk-assessment"}


@pytest.mark.parametrize("door", ["page", "api"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_qa_decision_refuses_the_same_bad_input_at_the_page_and_the_api(client, users, sites, qa, door, case):
    action, test, form, body, field, message = CASES[case]
    donor = _donor(users, sites, **{test: "reactive"})
    result_id = _result_id(donor, ScreeningTest[test])
    if door == "page":
        login(client, qa.username)
        response = client.post(f"/donors/BG/{donor.code}/results/{result_id}/{action}",
                               data={**form, "username": qa.username, "password": PASSWORD})
        assert response.status_code == 422
        assert message in html.unescape(response.get_data(as_text=True))
    else:
        response = client.post(f"{API}/donors/{donor.code}/screening/{result_id}/{API_PATH[action]}",
                               json={**body, "password": PASSWORD}, headers=bearer(new_token(qa)))
        assert response.status_code == 422
        assert response.get_json()["error"]["fields"][field] == message
    assert _count() == 0


@pytest.mark.parametrize(("body", "field", "message"), [
    ({"meaning": "Donation not allowed after risk assessment"}, "meaning",
     "Use 'Donation allowed after risk assessment' or leave it out."),
    ({"password": "pass\x00word"}, "password",
     "Remove the control characters (such as NUL or BEL): they cannot be stored."),
    ({"password": "x" * 10_000}, "password", "Use at most 2000 characters (this has 10000)."),
    ({"password": ""}, "password", "Enter your password to sign."),
])
def test_the_api_refuses_a_risk_assessment_signed_with_another_meaning_or_no_password(client, users, sites, qa, body,
                                                                                       field, message):
    donor = _donor(users, sites, ANTI_HBC="reactive")
    path = f"{API}/donors/{donor.code}/screening/{_result_id(donor, ScreeningTest.ANTI_HBC)}/risk-assessment"
    token, qa_id = new_token(qa), qa.id
    response = client.post(path, json={"allowed": True, "reason": "anti-HBs 150 IU/L", "password": PASSWORD, **body},
                           headers=bearer(token))
    assert response.status_code == 422
    assert response.get_json()["error"]["fields"] == {field: message}
    assert _count() == 0
    assert db.session.get(User, qa_id).failed_login_count == 0
    # The meaning it carries, in any case, signs.
    response = client.post(path, json={"allowed": True, "reason": "anti-HBs 150 IU/L", "password": PASSWORD,
                                       "meaning": "DONATION ALLOWED AFTER RISK ASSESSMENT"}, headers=bearer(token))
    assert response.status_code == 201 and _count() == 1


@pytest.mark.parametrize("door", ["page", "api"])
def test_a_bad_donor_date_is_refused_alike_at_the_page_and_the_api(client, users, sites, door):
    future = (TODAY + dt.timedelta(days=3)).isoformat()
    data = {"code": "UC-0077", "birth_date": future, "sex": "F", "donor_type": "allogeneic",
            "donation_kind": "living", "donation_date": TODAY.isoformat(), "consent_date": TODAY.isoformat(),
            "consent_form_version": "v3", "consent_scope": "clinical use"}
    if door == "page":
        login(client, "technician.bg")
        response = client.post("/donors/new", data=data)
        assert response.status_code == 422
        text = response.get_data(as_text=True)
        # The message sits next to the birth date field.
        assert 'id="birth_date"' in text and "This date is in the future." in text
    else:
        response = client.post(f"{API}/donors", json=data, headers=bearer(new_token(refetch(users["technician"]))))
        assert response.status_code == 422
        assert response.get_json()["error"]["fields"]["birth_date"] == "This date is in the future."
    assert db.session.scalar(sa.select(Donor.id).where(Donor.code == "UC-0077")) is None


def test_confirmatory_page_signs_and_the_donor_page_shows_the_decision(client, users, sites, qa):
    donor = _donor(users, sites, HCV="reactive")
    result_id = _result_id(donor, ScreeningTest.HCV)
    login(client, qa.username)
    page = client.get(f"/donors/BG/{donor.code}")
    assert "ineligible" in page.get_data(as_text=True)
    assert f"/results/{result_id}/confirmatory" in page.get_data(as_text=True)
    response = client.post(f"/donors/BG/{donor.code}/results/{result_id}/confirmatory", data={
        "meaning": "SCREENING_CLEARED", "reason": "false reaction of the screening assay",
        "confirmatory_results": "HCV RNA not detected (ref. C-9)", "username": qa.username, "password": PASSWORD})
    assert response.status_code == 302
    text = html.unescape(client.get(f"/donors/BG/{donor.code}").get_data(as_text=True))
    assert "Confirmatory testing: result cleared" in text and "HCV RNA not detected (ref. C-9)" in text
    assert "Reactive screening result cleared by confirmatory testing" in text  # the signature manifestation
    assert donor_services.eligibility(refetch(donor)).eligible


def test_risk_assessment_through_the_api_and_the_screening_view(client, users, sites, qa):
    donor = _donor(users, sites, ANTI_HBC="reactive")
    headers = bearer(new_token(qa))
    screening = client.get(f"{API}/donors/{donor.code}/screening", headers=headers).get_json()
    assert screening["eligibility"]["status"] == "needs_qa_assessment"
    assert any("Annex II 1.3" in r for r in screening["eligibility"]["reasons"])
    result_id = _result_id(donor, ScreeningTest.ANTI_HBC)
    path = f"{API}/donors/{donor.code}/screening/{result_id}/risk-assessment"
    # A technician may not decide; allowed must be a JSON boolean.
    tech_headers = bearer(new_token(refetch(users["technician"])))
    assert client.post(path, json={"allowed": True, "reason": "x", "password": PASSWORD},
                       headers=tech_headers).status_code == 403
    response = client.post(path, json={"allowed": "yes", "reason": "x", "password": PASSWORD}, headers=headers)
    assert response.status_code == 422 and "allowed" in response.get_json()["error"]["fields"]
    response = client.post(path, json={"allowed": False, "reason": "HBV DNA detected", "password": "wrong"},
                           headers=headers)
    assert response.status_code == 401
    assert _count() == 0
    response = client.post(path, json={"allowed": False, "reason": "HBV DNA detected", "password": PASSWORD},
                           headers=headers)
    assert response.status_code == 201, response.get_data(as_text=True)
    body = response.get_json()
    assert body["kind"] == "risk_assessment" and body["allowed"] is False
    assert body["signatures"][0]["meaning"] == "Donation not allowed after risk assessment"
    screening = client.get(f"{API}/donors/{donor.code}/screening", headers=headers).get_json()
    assert screening["eligibility"]["status"] == "ineligible"
    assert any("did not allow" in r and "HBV DNA detected" in r for r in screening["eligibility"]["reasons"])
    assert screening["qa_decisions"][0]["reason"] == "HBV DNA detected"
    # The signed decision stands: a second one is a conflict.
    again = client.post(path, json={"allowed": True, "reason": "changed my mind", "password": PASSWORD},
                        headers=headers)
    assert again.status_code == 409


def test_the_batch_record_shows_the_qa_assessment_of_the_donor(users, sites):
    from cellfactory.batches import services as batch_services
    from cellfactory.records.batch_record import render
    from cellfactory.releases import record_data
    from tests.batch_helpers import build_plant, signing
    from tests.conftest import pdf_text

    plant = build_plant(users, sites)
    donor = db.session.scalar(sa.select(Donor).where(Donor.code == "UC-0001"))
    tech = refetch(users["technician"])
    donor_services.add_screening_result(tech, donor, AddScreeningResult.of({
        "test": "anti_hbc", "sample_date": TODAY.isoformat(), "sample_type": "serum", "result": "reactive",
        "lab_reference": "LAB-HBC-2"}))
    donor = refetch(donor)
    anti_hbc = next(r for r in donor.current_results if r.result.value == "reactive")
    donor_services.decide_risk_assessment(plant.qa, anti_hbc, DecideRiskAssessment.of(
        {"allowed": True, "reason": "anti-HBs 150 IU/L, HBV DNA not detected"}), signer=signing(plant.qa))
    batch = batch_services.start_batch(plant.tech, sites["BG"],
                                       start_command(sites["BG"], "UCMSC", [plant.material_din],
                                                     started_at=batch_start()))
    text = " ".join(pdf_text(render(record_data.build(refetch(batch), "QA Tester (qa.bg)"))).split())
    assert "QA risk assessment" in text and "donation allowed" in text
    assert "anti-HBs 150 IU/L, HBV DNA not detected" in text
    assert "Donation allowed after risk assessment" in text  # the signature's meaning


@pytest.mark.parametrize("door", ["page", "api"])
def test_product_donor_age_limits_are_refused_alike_at_the_page_and_the_api(client, users, door):
    from cellfactory.products.models import Product

    data = {"code": "AGE1", "name": "Age-limited MSC", "dose_unit": "cells/kg", "donor_min_age_years": 40,
            "donor_max_age_years": 18}
    message = "The highest donor age is below the lowest."
    if door == "page":
        login(client, "qa.bg")
        response = client.post("/products/new", data={**data, "cellular": "y"})
        assert response.status_code == 422 and message in response.get_data(as_text=True)
    else:
        response = client.post(f"{API}/products", json=data, headers=bearer(new_token(refetch(users["qa"]))))
        assert response.status_code == 422
        assert response.get_json()["error"]["fields"]["donor_max_age_years"] == message
    assert db.session.scalar(sa.select(Product.id).where(Product.code == "AGE1")) is None


def test_product_donor_age_limits_are_shown(client, users):
    response = client.post(f"{API}/products", json={"code": "AGE2", "name": "Adult MSC", "donor_min_age_years": 18},
                           headers=bearer(new_token(refetch(users["qa"]))))
    assert response.status_code == 201
    assert (response.get_json()["donor_min_age_years"], response.get_json()["donor_max_age_years"]) == (18, None)
    login(client, "qa.bg")
    assert "18 to any years" in client.get("/products/AGE2").get_data(as_text=True)

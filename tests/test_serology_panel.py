"""Issue 16 (a): a donor's whole serology panel on one form: one sample, a row per test, no result preselected; every
row is saved with the rules of a single result, or none is."""

from __future__ import annotations

import datetime as dt
import re

import pytest
import sqlalchemy as sa

from cellfactory.audit.models import AuditEntry
from cellfactory.core.errors import Conflict, PermissionDenied, ValidationFailed
from cellfactory.donors import services as donor_services
from cellfactory.donors.commands import AddScreeningPanel, RegisterDonor, WithdrawConsent
from cellfactory.donors.models import Donor, ScreeningResultRecord, ScreeningTest
from cellfactory.extensions import db
from tests.conftest import login, refetch
from tests.intake_helpers import TODAY, add_full_panel, donor_data

API = "/api/v1"
# The panel of a living allogeneic donor at a site without the HTLV-I rule, in the page's order.
LIVING_PANEL = ["anti_hiv_1_2", "hbsag", "anti_hbc", "anti_hcv", "syphilis_treponemal", "syphilis_nontreponemal"]


def _donor(users, sites, code: str = "UC-0100", **overrides) -> Donor:
    tech = refetch(users["technician"])
    return donor_services.register_donor(tech, sites["BG"], RegisterDonor.of(donor_data(code, **overrides)))


def _results(donor_id: int) -> list[ScreeningResultRecord]:
    return list(db.session.scalars(sa.select(ScreeningResultRecord).where(ScreeningResultRecord.donor_id == donor_id)
                                   .order_by(ScreeningResultRecord.id)))


def _form(rows: dict[int, tuple[str, str]], *, tests=LIVING_PANEL, **overrides) -> dict[str, str]:
    """The panel form as a browser posts it: every row's hidden test, the typed rows' result and kit lot."""
    data = {"panel-sample_date": TODAY.isoformat(), "panel-tested_person": "donor", "panel-sample_type": "serum",
            "panel-lab_reference": "LAB-2026-0077"}
    for index, test in enumerate(tests):
        result, kit = rows.get(index, ("", ""))
        data |= {f"panel-rows-{index}-test": test, f"panel-rows-{index}-result": result,
                 f"panel-rows-{index}-kit_lot": kit}
    data.update(overrides)
    return data


def _panel(**overrides) -> dict:
    data = {"sample_date": TODAY.isoformat(), "tested_person": "donor", "sample_type": "serum",
            "lab_reference": "LAB-2026-0077",
            "results": [{"test": "anti_hiv_1_2", "result": "negative", "kit_lot": "HIV kit 24A"},
                        {"test": "hbsag", "result": "negative", "kit_lot": "HBsAg kit 7"},
                        {"test": "anti_hbc", "result": "negative"},
                        {"test": "anti_hcv", "result": "negative"},
                        {"test": "syphilis_treponemal", "result": "negative", "kit_lot": "TPHA 3"}]}
    data.update(overrides)
    return data


# --- the page --------------------------------------------------------------------------------------------------


def test_the_page_offers_a_row_per_test_of_the_panel_and_no_result_preselected(client, users, sites):
    _donor(users, sites)
    login(client, "technician.bg")
    page = client.get("/donors/BG/UC-0100").get_data(as_text=True)
    rows = re.findall(r'name="panel-rows-(\d+)-test"[^>]*value="([a-z0-9_]+)"', page) or \
        [(i, t) for t, i in re.findall(r'value="([a-z0-9_]+)"[^>]*name="panel-rows-(\d+)-test"', page)]
    assert [test for _index, test in sorted(rows, key=lambda r: int(r[0]))] == LIVING_PANEL
    selects = re.findall(r'<select[^>]*name="panel-rows-\d+-result".*?</select>', page, flags=re.S)
    assert len(selects) == 6
    for select in selects:
        chosen = re.findall(r'<option[^>]*selected[^>]*value="([^"]*)"|<option[^>]*value="([^"]*)"[^>]*selected',
                            select)
        # Only the "not tested" placeholder may be shown chosen: never a result.
        assert {a or b for a, b in chosen} <= {""}, select
    assert "Anti-HIV-1,2" in page and "Syphilis, non-specific (non-treponemal)" in page


def test_htlv_and_nat_rows_where_the_donation_needs_them(client, users, sites):
    _donor(users, sites, "UC-0101", htlv_risk=True, donation_kind="living_stored",
           donation_date=(TODAY - dt.timedelta(days=2)).isoformat())
    login(client, "technician.bg")
    page = client.get("/donors/BG/UC-0101").get_data(as_text=True)
    tests = re.findall(r'name="panel-rows-\d+-test"[^>]*value="([a-z0-9_]+)"', page)
    assert tests == [*LIVING_PANEL[:4], "anti_htlv_1", "syphilis_treponemal", "syphilis_nontreponemal",
                     "nat_hiv", "nat_hbv", "nat_hcv"]


def test_a_full_panel_is_saved_in_one_go_with_the_shared_sample(client, users, sites):
    donor = _donor(users, sites)
    twin = _donor(users, sites, "UC-0102")
    add_full_panel(refetch(users["technician"]), twin)  # the same results entered one at a time
    login(client, "technician.bg")
    response = client.post("/donors/BG/UC-0100/panel", data=_form(
        {0: ("negative", "HIV kit 24A"), 1: ("negative", ""), 2: ("negative", ""), 3: ("negative", "HCV 9"),
         4: ("negative", "TPHA 3")}))
    assert response.status_code == 302, response.get_data(as_text=True)
    saved = _results(donor.id)
    assert [r.test.value for r in saved] == LIVING_PANEL[:5]  # the blank non-treponemal row is not saved
    assert {(r.sample_date, r.lab_reference, r.sample_type.value, r.tested_person.value) for r in saved} == {
        (TODAY, "LAB-2026-0077", "serum", "donor")}
    assert [r.kit_lot for r in saved] == ["HIV kit 24A", "", "", "HCV 9", "TPHA 3"]
    assert {r.result.value for r in saved} == {"negative"}
    # Each result is audited as a single entry is, and eligibility is derived as from single entries.
    audited = db.session.scalars(sa.select(AuditEntry.entity_id).where(
        AuditEntry.entity_type == "screening_result", AuditEntry.action == "create")).all()
    assert {str(r.id) for r in saved} <= set(audited)
    donor, twin = refetch(donor), refetch(twin)
    assert donor_services.eligibility(donor).summary == donor_services.eligibility(twin).summary == "eligible"
    page = client.get("/donors/BG/UC-0100").get_data(as_text=True)
    assert 'badge-ok">eligible' in page


def test_a_reactive_row_makes_the_donor_ineligible_as_a_single_entry_would(client, users, sites):
    donor = _donor(users, sites)
    login(client, "technician.bg")
    response = client.post("/donors/BG/UC-0100/panel", data=_form(
        {0: ("negative", ""), 1: ("reactive", ""), 2: ("negative", ""), 3: ("negative", ""), 4: ("negative", "")}))
    assert response.status_code == 302
    assert donor_services.eligibility(refetch(donor)).summary == "ineligible"


def test_a_refused_row_saves_nothing_and_is_named_on_its_row(client, users, sites):
    donor = _donor(users, sites)
    login(client, "technician.bg")
    # Row 3 (the fourth) has a kit lot but no result: it is not blank, so it is refused, not skipped.
    response = client.post("/donors/BG/UC-0100/panel", data=_form(
        {0: ("negative", ""), 1: ("negative", ""), 3: ("", "HCV 9"), 4: ("negative", "")}))
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert _results(donor.id) == []
    row = re.search(r'name="panel-rows-3-result".*?</div>', page, flags=re.S).group(0)
    assert "Choose the result" in row
    assert 'href="#panel-rows-3-result"' in page  # the summary at the top links to the row
    # What was typed stays on the form.
    assert 'value="HCV 9"' in page


def test_a_sample_in_the_future_refuses_the_whole_panel(client, users, sites):
    donor = _donor(users, sites)
    login(client, "technician.bg")
    tomorrow = (TODAY + dt.timedelta(days=1)).isoformat()
    response = client.post("/donors/BG/UC-0100/panel", data=_form({0: ("negative", ""), 1: ("negative", "")},
                                                                  **{"panel-sample_date": tomorrow}))
    assert response.status_code == 422
    assert "The sample date cannot be in the future." in response.get_data(as_text=True)
    assert _results(donor.id) == []


def test_blank_rows_are_skipped_but_one_row_is_needed(client, users, sites):
    donor = _donor(users, sites)
    login(client, "technician.bg")
    response = client.post("/donors/BG/UC-0100/panel", data=_form({}))
    assert response.status_code == 422
    assert "Choose the result of at least one test." in response.get_data(as_text=True)
    assert _results(donor.id) == []
    response = client.post("/donors/BG/UC-0100/panel", data=_form({5: ("negative", "RPR 2")}))
    assert response.status_code == 302
    assert [(r.test.value, r.kit_lot) for r in _results(donor.id)] == [("syphilis_nontreponemal", "RPR 2")]


@pytest.mark.parametrize(("field", "value"), [
    ("panel-lab_reference", "LAB\x00 77"),
    ("panel-lab_reference", "L" * 10_000),
    ("panel-rows-1-kit_lot", "kit \u202e7A"),
    ("panel-rows-1-kit_lot", "kit\u200f lot"),
    ("panel-rows-2-result", "positive"),
    ("panel-rows-0-test", "anti_hiv_3"),
    ("panel-sample_type", "whole blood"),
])
def test_hostile_or_impossible_input_is_refused_and_nothing_saved(client, users, sites, field, value):
    donor = _donor(users, sites)
    login(client, "technician.bg")
    data = _form({0: ("negative", ""), 1: ("negative", "HBsAg 7"), 2: ("negative", "")})
    data[field] = value
    response = client.post("/donors/BG/UC-0100/panel", data=data)
    assert response.status_code == 422, field
    assert 'class="error"' in response.get_data(as_text=True)
    assert _results(donor.id) == []


# --- the service and its command ------------------------------------------------------------------------------


def test_the_command_names_each_refused_row_and_field():
    with pytest.raises(ValidationFailed) as refused:
        AddScreeningPanel.parse(_panel(results=[
            {"test": "anti_hiv_1_2", "result": "negative"},
            {"test": "hbsag", "result": ""},
            {"test": "anti_hbc", "result": "maybe"},
            {"test": "anti_hiv_1_2", "result": "negative"},
            {"test": "anti_hcv", "result": "negative", "kit_lot": "x" * 101},
            "hbsag"], lab_reference="\ud800"))
    fields = refused.value.fields
    assert set(fields) == {"results[1].result", "results[2].result", "results[3].test", "results[4].kit_lot",
                           "results[5]", "lab_reference"}
    assert fields["results[1].result"].startswith("Choose the result")
    assert "Anti-HIV-1,2 is already in row 1" in fields["results[3].test"]
    for results in (None, [], "hbsag", [{"test": t.value, "result": "negative"} for t in ScreeningTest] * 2):
        with pytest.raises(ValidationFailed) as refused:
            AddScreeningPanel.parse(_panel(results=results))
        assert set(refused.value.fields) == {"results"}


def test_the_service_refuses_what_a_single_entry_is_refused(users, sites):
    tech = refetch(users["technician"])
    donor = _donor(users, sites)
    other_site = refetch(users["technician_mz"])
    with pytest.raises(PermissionDenied):
        donor_services.add_screening_panel(other_site, donor, AddScreeningPanel.parse(_panel()))
    # Before the donor's birth (1990-06-01): refused for the sample, as a single entry.
    born = _donor(users, sites, "UC-0103", birth_year=None, birth_date="1990-06-01")
    with pytest.raises(ValidationFailed) as refused:
        donor_services.add_screening_panel(tech, born, AddScreeningPanel.parse(_panel(sample_date="1990-05-31")))
    assert set(refused.value.fields) == {"sample_date"}
    donor_services.withdraw_consent(tech, donor, WithdrawConsent(withdrawn_on=TODAY, reason="withdrawn in writing"))
    with pytest.raises(Conflict):
        donor_services.add_screening_panel(tech, refetch(donor), AddScreeningPanel.parse(_panel()))
    assert _results(donor.id) == [] and _results(born.id) == []


# --- the API ---------------------------------------------------------------------------------------------------


def test_the_api_saves_a_panel_or_nothing(client, users, sites):
    from tests.test_api import bearer, new_token

    donor_id = _donor(users, sites).id
    headers = bearer(new_token(refetch(users["technician"])))
    bad = _panel()
    bad["results"][2] = {"test": "anti_hbc", "result": "negative", "kit_lot": "kit\x00"}
    response = client.post(f"{API}/donors/UC-0100/screening-panel", json=bad, headers=headers)
    assert response.status_code == 422, response.get_data(as_text=True)
    assert set(response.get_json()["error"]["fields"]) == {"results[2].kit_lot"}
    hostile_name = _panel()
    hostile_name["results"][0]["note\u202e"] = "x"
    response = client.post(f"{API}/donors/UC-0100/screening-panel", json=hostile_name, headers=headers)
    assert response.status_code == 422
    assert _results(donor_id) == []
    response = client.post(f"{API}/donors/UC-0100/screening-panel", json=_panel(), headers=headers)
    assert response.status_code == 201, response.get_data(as_text=True)
    body = response.get_json()
    assert [r["test"] for r in body["results"]] == LIVING_PANEL[:5]
    assert body["eligibility"]["status"] == "eligible"
    assert len(_results(donor_id)) == 5


def test_more_rows_than_tests_are_never_more_than_the_panel(client, users, sites):
    """A hand-made post with rows past the ten tests: the extra rows are not read, nothing breaks."""
    donor_id = _donor(users, sites).id
    login(client, "technician.bg")
    tests = [t.value for t in ScreeningTest] * 2
    response = client.post("/donors/BG/UC-0100/panel", data=_form(
        {index: ("negative", "") for index in range(len(tests))}, tests=tests))
    assert response.status_code == 302
    assert sorted(r.test.value for r in _results(donor_id)) == sorted(t.value for t in ScreeningTest)

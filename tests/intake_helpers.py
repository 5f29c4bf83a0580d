"""Builders for intake tests: a donor with a complete panel, a receipt form that passes."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from cellfactory.core.clock import utcnow
from cellfactory.donors import services as donor_services
from cellfactory.donors.commands import AddScreeningResult
from cellfactory.donors.eligibility import BASE_PANEL
from cellfactory.donors.models import ScreeningTest

# The test sites' calendar (Europe/Rome): an hour before midnight UTC it is already tomorrow there.
TODAY = utcnow().astimezone(ZoneInfo("Europe/Rome")).date()


def donor_data(code: str = "UC-0001", **overrides) -> dict:
    data = {"code": code, "birth_year": 1990, "sex": "F", "donor_type": "allogeneic", "donation_kind": "living",
            "donation_date": TODAY.isoformat(), "consent_date": (TODAY - dt.timedelta(days=30)).isoformat(),
            "consent_form_version": "CF-UC v3.1", "consent_scope": "clinical use and banking"}
    data.update(overrides)
    return data


def add_full_panel(actor, donor, *, result: str = "negative", sample_date: dt.date | None = None) -> None:
    for test in (*BASE_PANEL, ScreeningTest.SYPHILIS_TREPONEMAL):
        donor_services.add_screening_result(actor, donor, AddScreeningResult.of({
            "test": test.value, "sample_date": (sample_date or TODAY).isoformat(), "sample_type": "serum",
            "result": result, "lab_reference": f"LAB-{test.value}", "tested_person": "donor"}))


def receipt_data(donor_code: str = "UC-0001", din: str = "=A99912600012300", **overrides) -> dict:
    now = utcnow()
    data = {
        "din": din, "material_type": "umbilical_cord", "donor": donor_code,
        "collected_at": (now - dt.timedelta(hours=6)).isoformat(),
        "collection_centre": "Ospedale Papa Giovanni XXIII, Sala parto", "quantity": "35.5",
        "transport_started_at": (now - dt.timedelta(hours=5)).isoformat(),
        "arrived_at": (now - dt.timedelta(hours=1)).isoformat(),
        "transport_temp_min_c": "4.0", "transport_temp_max_c": "8.5", "container_intact": True,
        "documents_complete": True,
    }
    data.update(overrides)
    return data

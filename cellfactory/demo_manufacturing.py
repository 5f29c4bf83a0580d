"""Demo master data and batches: products with approved specifications, lots and equipment at every
manufacturing site, and batches in every state with realistic passages (P0-P3, 2-4 PD each).
Built through the services, like real data."""

from __future__ import annotations

import datetime as dt
import decimal
import random
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa

from cellfactory.auth.models import User
from cellfactory.batches import services as batches
from cellfactory.batches.commands import ReagentUse, RecordStep, StartBatch
from cellfactory.batches.models import BatchStatus
from cellfactory.core.clock import utcnow
from cellfactory.donors import services as donors
from cellfactory.donors.commands import AddScreeningResult, RegisterDonor
from cellfactory.donors.eligibility import BASE_PANEL
from cellfactory.donors.models import ScreeningTest
from cellfactory.equipment import services as equipment
from cellfactory.equipment.commands import RegisterEquipment
from cellfactory.extensions import db
from cellfactory.lifecycle import services as lifecycle
from cellfactory.materials import services as materials
from cellfactory.materials.commands import ReceiveMaterial
from cellfactory.products import services as products
from cellfactory.products.commands import ChangeLabelling, CreateDraft, CreateProduct
from cellfactory.products.models import Product
from cellfactory.reagents import services as reagents
from cellfactory.reagents.commands import ChangeLotStatus, CreateCatalogueItem, ReceiveLot
from cellfactory.reagents.models import LotStatus, ReagentLot
from cellfactory.signatures.commands import Signer
from cellfactory.sites import services as site_services

S = BatchStatus

IDENTITY = [("CD73", "CD73+"), ("CD90", "CD90+"), ("CD105", "CD105+")]
NEGATIVES = [("CD45", "CD45+"), ("CD34", "CD34+"), ("CD14", "CD14+"), ("CD19", "CD19+"), ("HLADR", "HLA-DR+")]
SAFETY = [
    {"code": "STER", "name": "Sterility", "method": "Ph. Eur. 2.6.27 (BacT/ALERT, 7 days)", "stage": "release",
     "criterion": "qualitative", "expected": "no growth", "vocabulary": ["no growth", "growth"],
     "may_be_pending": True, "incubation_days": 7},
    {"code": "MYCO", "name": "Mycoplasma", "method": "Ph. Eur. 2.6.7 NAT", "stage": "release",
     "criterion": "qualitative", "expected": "not detected", "vocabulary": ["not detected", "detected"]},
    {"code": "ENDO", "name": "Endotoxin", "method": "Ph. Eur. 2.6.14 LAL kinetic", "unit": "EU/mL",
     "stage": "release", "criterion": "range", "upper": "0.5", "upper_inclusive": False},
]


def _msc_tests(viability: str) -> list[dict[str, Any]]:
    tests: list[dict[str, Any]] = [
        {"code": "VIAB", "name": "Viability", "method": "7-AAD flow cytometry", "unit": "%", "stage": "release",
         "criterion": "range", "lower": viability},
        {"code": "COUNT", "name": "Viable cells per bag", "method": "NucleoCounter NC-200", "unit": "10^6 cells",
         "stage": "release", "criterion": "range", "lower": "50", "upper": "200"},
    ]
    tests += [{"code": code, "name": name, "method": "Flow cytometry, ISCT panel", "unit": "%", "stage": "release",
               "criterion": "range", "lower": "95"} for code, name in IDENTITY]
    tests += [{"code": code, "name": name, "method": "Flow cytometry, ISCT panel", "unit": "%", "stage": "release",
               "criterion": "range", "upper": "2"} for code, name in NEGATIVES]
    tests.append({"code": "IPVIAB", "name": "In-process viability at harvest", "method": "Trypan blue", "unit": "%",
                  "stage": "in_process", "criterion": "range", "lower": "80"})
    return tests + SAFETY


PRODUCTS = [
    {"code": "UCMSC", "name": "Umbilical cord mesenchymal stromal cells (MSC(WJ))", "cellular": True,
     "dose_unit": "cells/kg", "unit_code": "A0101", "max_passage": 5, "max_cpd": "25", "tests": _msc_tests("70"),
     "steps": [("ISO", "Isolation: Wharton's jelly explant", "step"), ("P0", "Primary culture P0", "passage"),
               ("P1", "Passage 1", "passage"), ("P2", "Passage 2", "passage"), ("P3", "Passage 3", "passage"),
               ("HARV", "Harvest and formulation", "step"), ("CRYO", "Fill and cryopreservation", "step")]},
    {"code": "BMMSC", "name": "Bone marrow mesenchymal stromal cells (MSC(M))", "cellular": True,
     "dose_unit": "cells/kg", "unit_code": "A0102", "donor_min_age_years": 18, "donor_max_age_years": 60,
     "max_passage": 4, "max_cpd": "20", "tests": _msc_tests("70"),
     # Mononuclear cells seeded at P0: most never attach, so P0 is not counted (cPD from the first adherent culture).
     "steps": [("P0", "Mononuclear cell seeding P0", "passage", False), ("P1", "Passage 1", "passage"),
               ("P2", "Passage 2", "passage"), ("HARV", "Harvest and formulation", "step"),
               ("CRYO", "Fill and cryopreservation", "step")]},
    {"code": "MSCSEC", "name": "MSC secretome (conditioned medium concentrate)", "cellular": False,
     "dose_unit": "mg protein", "max_passage": None, "max_cpd": None,
     "tests": [{"code": "PROT", "name": "Total protein", "method": "BCA assay", "unit": "mg/mL", "stage": "release",
                "criterion": "range", "lower": "0.5", "upper": "5"}] + SAFETY,
     "steps": [("CULT", "MSC culture to confluence", "step"), ("COND", "Serum-free conditioning 48 h", "step"),
               ("COLL", "Collection and clarification", "step"), ("CONC", "Concentration and diafiltration", "step"),
               ("FILL", "Sterile filtration and fill", "step")]},
    {"code": "CIK", "name": "Cytokine-induced killer cells", "cellular": True, "dose_unit": "CD3+CD56+ cells/kg",
     # Made from the patient's own blood, given fresh: its batches name their recipient when they start.
     "collection_type": "autologous", "shelf_life_fresh_hours": 24, "max_passage": None, "max_cpd": None,
     "tests": [{"code": "VIAB", "name": "Viability", "method": "7-AAD flow cytometry", "unit": "%",
                "stage": "release", "criterion": "range", "lower": "80"},
               {"code": "CD3CD56", "name": "CD3+CD56+", "method": "Flow cytometry", "unit": "%", "stage": "release",
                "criterion": "range", "lower": "20"}] + SAFETY,
     "steps": [("PBMC", "PBMC isolation (density gradient)", "step"),
               ("ACT", "Activation: IFN-gamma, anti-CD3, IL-2", "step"), ("EXP", "Expansion 21 days", "step"),
               ("HARV", "Harvest and formulation", "step")]},
    # Minimally manipulated: tissues and cells for human application, distributed under the Single European Code
    # (the MSC, CIK and gene-modified grafts are medicinal products, labelled without it).
    {"code": "HSC34", "name": "Autologous CD34+ selected HSC graft", "cellular": True,
     "dose_unit": "CD34+ cells/kg", "unit_code": "A0103", "max_passage": None, "max_cpd": None,
     "sec_distribution": True,
     "tests": [{"code": "CD34DOSE", "name": "CD34+ dose", "method": "ISHAGE flow cytometry",
                "unit": "10^6 CD34+ cells/kg", "stage": "release", "criterion": "range", "lower": "2"},
               {"code": "VIAB", "name": "Viability", "method": "7-AAD flow cytometry", "unit": "%",
                "stage": "release", "criterion": "range", "lower": "70"}] + SAFETY,
     "steps": [("SEL", "CD34+ immunomagnetic selection", "step"), ("FORM", "Formulation", "step"),
               ("CRYO", "Cryopreservation", "step")]},
    {"code": "GMHSC", "name": "Gene-modified autologous HSC (lentiviral)", "cellular": True,
     "dose_unit": "CD34+ cells/kg", "max_passage": None, "max_cpd": None,
     "tests": [{"code": "VCN", "name": "Vector copy number", "method": "ddPCR", "unit": "copies/cell",
                "stage": "release", "criterion": "range", "lower": "0.5", "upper": "5"},
               {"code": "CD34DOSE", "name": "CD34+ dose", "method": "ISHAGE flow cytometry",
                "unit": "10^6 CD34+ cells/kg", "stage": "release", "criterion": "range", "lower": "2"}] + SAFETY,
     "steps": [("SEL", "CD34+ selection", "step"), ("PRESTIM", "Pre-stimulation with cytokines", "step"),
               ("TRANS", "Transduction (lentiviral vector lot recorded)", "step"), ("FORM", "Formulation", "step"),
               ("CRYO", "Cryopreservation", "step")]},
]

ITEMS = [("AMEM", "alpha-MEM, no nucleosides", "Gibco", "medium", "mL"),
         ("HPL", "Human platelet lysate, GMP grade", "PL BioScience", "supplement", "mL"),
         ("TRYPLE", "TrypLE Select", "Gibco", "dissociation enzyme", "mL"),
         ("DPBS", "DPBS without Ca/Mg", "Gibco", "buffer", "mL"),
         ("DMSO", "DMSO, Cryosure", "WAK-Chemie", "cryoprotectant", "mL"),
         ("HSA", "Human serum albumin 20 %", "Kedrion", "excipient", "mL")]
EQUIPMENT = [("BSC-01", "Biosafety cabinet 1 (grade A)", "biosafety cabinet", 120),
             ("INC-01", "CO2 incubator 1", "CO2 incubator", 90), ("INC-02", "CO2 incubator 2", "CO2 incubator", 60),
             ("CEN-01", "Centrifuge 1", "centrifuge", 150), ("NC-01", "NucleoCounter NC-200", "cell counter", 45),
             ("CRF-01", "Controlled-rate freezer", "freezer", 200), ("INC-09", "CO2 incubator 9 (old)",
                                                                      "CO2 incubator", -10)]

# Per manufacturing site: (product, material type, the states its demo batches end in).
SITE_PLANS = {
    "BG": ("UCMSC", "umbilical_cord", [S.IN_PROCESS, S.AWAITING_QC, S.AWAITING_QA_REVIEW, S.AWAITING_CERTIFICATION,
                                       S.CONDITIONALLY_RELEASED, S.RELEASED, S.REJECTED, S.ON_HOLD]),
    "MZ": ("BMMSC", "bone_marrow", [S.IN_PROCESS, S.AWAITING_QC, S.AWAITING_CERTIFICATION, S.RELEASED,
                                    S.ON_HOLD]),
    "MI": ("UCMSC", "umbilical_cord", [S.IN_PROCESS, S.AWAITING_QA_REVIEW, S.RELEASED]),
    "PV": ("BMMSC", "bone_marrow", [S.AWAITING_QC, S.CONDITIONALLY_RELEASED, S.ON_HOLD_AFTER_RELEASE,
                                    S.RECALLED]),
}


def _signer(user: User, password: str) -> Signer:
    """The demo signs as each user, by name and password, outside a continuous session."""
    return Signer(user.username, password)


def _template_step(code: str, name: str, kind: str, counted: bool = True) -> dict[str, Any]:
    step: dict[str, Any] = {"code": code, "name": name, "kind": kind}
    if not counted:
        step["pd_counted"] = False
    return step


def build_manufacturing(users: dict[str, User], password: str, say: Callable[[str], None] = lambda _text: None
                        ) -> None:
    say("Products, approved specifications, reagent catalogue")
    qa_network = users["qa.network"]
    approver = users["qa.bg"]  # the author of a specification version never approves it
    for spec in PRODUCTS:
        product = products.create_product(qa_network, CreateProduct(
            code=spec["code"], name=spec["name"], cellular=spec["cellular"], dose_unit=spec["dose_unit"],
            unit_code=spec.get("unit_code"), donor_min_age_years=spec.get("donor_min_age_years"),
            donor_max_age_years=spec.get("donor_max_age_years"), collection_type=spec.get("collection_type"),
            shelf_life_fresh_hours=spec.get("shelf_life_fresh_hours")))
        draft = products.create_draft(qa_network, product, CreateDraft(
            change_summary="First approved version for the clinical trial",
            steps=[_template_step(*step) for step in spec["steps"]], max_passage=spec["max_passage"],
            max_cumulative_pd=spec["max_cpd"], tests=spec["tests"]))
        products.approve(approver, draft, signer=_signer(approver, password))
        if spec.get("sec_distribution"):
            products.change_labelling(qa_network, product, ChangeLabelling(
                sec_distribution=True, cryoprotectant="10% DMSO", storage_temperature="≤ -150 °C (vapour phase LN2)",
                reason="Labelling per ISBT 128 ST-012: a graft for human application carries the SEC"))
    for code, name, supplier, category, unit in ITEMS:
        reagents.create_item(qa_network, CreateCatalogueItem(code=code, name=name, supplier=supplier,
                                                             category=category, unit=unit))
    rng = random.Random(20261122)
    for site_code, (product_code, material_type, states) in SITE_PLANS.items():
        say(f"Batches at {site_code}: {len(states)} {product_code} batches, from the record to QC and release")
        _site_batches(users, password, site_code, product_code, material_type, states, rng)
    say("A CD34+ graft at PV, released: its units are labelled with the SEC")
    _sec_graft(users, password, rng)


def _site_batches(users: dict[str, User], password: str, site_code: str, product_code: str, material_type: str,
                  states: list[BatchStatus], rng: random.Random) -> None:
    site = site_services.get_site(site_code)
    key = site_code.lower()
    tech, tech2, qa = users[f"technician.{key}"], users[f"technician2.{key}"], users[f"qa.{key}"]
    qc, qc2, qp = users[f"qc_analyst.{key}"], users[f"qc_analyst2.{key}"], users[f"qp.{key}"]
    today = utcnow().date()
    lots = {}
    for index, (code, *_rest) in enumerate(ITEMS):
        lot = reagents.receive_lot(qa, site, ReceiveLot(
            item=code, lot_number=f"{code}-{site_code}-{2600 + index}", coa_reference=f"CoA {code} 2026/{index}",
            expiry_date=today + dt.timedelta(days=300), received_on=today - dt.timedelta(days=90)))
        reagents.set_lot_status(qa, lot, ChangeLotStatus(status=LotStatus.RELEASED,
                                                         reason="Certificate of analysis reviewed: conforming"))
        lots[code] = lot
    reagents.receive_lot(qa, site, ReceiveLot(item="HPL", lot_number=f"HPL-{site_code}-NEW",
                                              expiry_date=today + dt.timedelta(days=400)))
    for code, name, kind, due in EQUIPMENT:
        equipment.register(qa, site, RegisterEquipment(code=code, name=name, kind=kind,
                                                       calibration_due=today + dt.timedelta(days=due)))
    product = db.session.scalar(sa.select(Product).where(Product.code == product_code))
    for index, target in enumerate(states):
        din = _accepted_material(tech, site, material_type, index, 30 + 3 * index)
        days_ago = 28 + 3 * index
        # Entered afterwards, like every demo record: the batch started an hour before its first step.
        batch = batches.start_batch(tech, site, StartBatch(
            product=product.code, materials=[din], started_at=utcnow() - dt.timedelta(days=days_ago, hours=1)))
        _record(batch, tech, tech2, lots, rng, days_ago=days_ago, partial=target == S.IN_PROCESS,
                password=password)
        if target == S.IN_PROCESS:
            continue
        _advance(batch, target, tech, (qc, qc2), qa, qp, password, rng)


def _sec_graft(users: dict[str, User], password: str, rng: random.Random) -> None:
    """One released HSC34 batch at PV from a bone marrow harvest: selection in buffer, formulation in albumin."""
    site = site_services.get_site("PV")
    tech, tech2, qa = users["technician.pv"], users["technician2.pv"], users["qa.pv"]
    analysts, qp = (users["qc_analyst.pv"], users["qc_analyst2.pv"]), users["qp.pv"]
    lots = {use: db.session.scalar(sa.select(ReagentLot).where(ReagentLot.site_id == site.id,
                                                               ReagentLot.lot_number == f"{code}-PV-{2600 + index}"))
            for use, code, index in (("AMEM", "DPBS", 3), ("HPL", "HSA", 5))}
    din = _accepted_material(tech, site, "bone_marrow", 9, 12)
    batch = batches.start_batch(tech, site, StartBatch(product="HSC34", materials=[din],
                                                       started_at=utcnow() - dt.timedelta(days=10, hours=1)))
    _record(batch, tech, tech2, lots, rng, days_ago=10, partial=False, password=password)
    _advance(batch, S.RELEASED, tech, analysts, qa, qp, password, rng)


def _accepted_material(tech: User, site, material_type: str, index: int, days_ago: int) -> str:
    now = utcnow()
    donation = (now - dt.timedelta(days=days_ago)).date()
    prefix = "UC" if material_type == "umbilical_cord" else "BM"
    donor = donors.register_donor(tech, site, RegisterDonor.of({
        "code": f"{prefix}-{site.code}-B{index + 1:02d}", "birth_date": f"{1984 + index}-06-15",
        "sex": "F" if index % 2 else "M",
        "donor_type": "allogeneic", "donation_kind": "living", "donation_date": donation.isoformat(),
        "consent_date": (donation - dt.timedelta(days=14)).isoformat(), "consent_form_version": "CF v3.1",
        "consent_scope": "clinical use in trials, banking of surplus material"}))
    for test in (*BASE_PANEL, ScreeningTest.SYPHILIS_TREPONEMAL):
        donors.add_screening_result(tech, donor, AddScreeningResult.of({
            "test": test.value, "sample_date": donation.isoformat(), "sample_type": "serum", "result": "negative",
            "tested_person": "donor", "lab_reference": f"{site.code}-SER-{index}-{test.value}"}))
    collected = now - dt.timedelta(days=days_ago, hours=2)
    material = materials.receive_material(tech, site, ReceiveMaterial.of({
        "allocate_din": True, "material_type": material_type, "donor": donor.code, "collected_at": collected,
        "collection_centre": "Maternity ward" if prefix == "UC" else "Haematology, BM harvest room",
        "quantity": "28.0" if prefix == "UC" else "55.0", "anticoagulant": None if prefix == "UC" else "Heparin",
        "transport_started_at": collected + dt.timedelta(minutes=40), "arrived_at": collected + dt.timedelta(hours=2),
        "transport_temp_min_c": "5.0", "transport_temp_max_c": "9.0", "container_intact": True,
        "documents_complete": True}))
    materials.print_labels(tech, [material])
    return material.din


def _record(batch, tech: User, tech2: User, lots, rng: random.Random, *, days_ago: int, partial: bool,
            password: str) -> None:
    clock = utcnow() - dt.timedelta(days=days_ago)
    cells = 4.0e5
    steps = batch.steps
    limit = 2 if partial else len(steps)
    for step in steps[:limit]:
        data: dict[str, Any] = {"observations": "As per SOP; no anomalies.",
                                "equipment": ["BSC-01", "INC-01" if step.kind.value == "passage" else "CEN-01"],
                                "reagents": [ReagentUse(lot_id=lots["AMEM"].id, quantity=decimal.Decimal("250"),
                                                        unit="mL"),
                                             ReagentUse(lot_id=lots["HPL"].id, quantity=decimal.Decimal("12.5"),
                                                        unit="mL")]}
        if step.kind.value == "passage":
            number = int(step.code[1:]) if step.code[1:].isdigit() else 0
            hours = rng.uniform(70, 110)
            doublings = rng.uniform(2.0, 4.0)
            if not step.pd_counted:
                # Bone-marrow mononuclear cells: tens of millions seeded, a few million adherent MSC harvested
                # (a negative "PD", shown but not counted).
                cells = 5.0e7
                doublings = -4.3 + (doublings - 3.0) / 5
            harvested = cells * 2 ** doublings
            data.update({"vessel_type": "CS2" if number >= 2 else "T175",
                         "vessel_count": 1 + number, "cells_seeded": int(cells), "seeded_at": clock,
                         "cells_harvested": int(harvested), "harvested_at": clock + dt.timedelta(hours=hours),
                         "viability_pct": decimal.Decimal(f"{rng.uniform(88, 97):.1f}"),
                         "confluence_pct": decimal.Decimal(f"{rng.uniform(75, 92):.0f}")})
            clock += dt.timedelta(hours=hours + 1)
            cells = min(harvested * 0.9, 4.0e7)
        else:
            data.update({"started_at": clock, "ended_at": clock + dt.timedelta(hours=3)})
            clock += dt.timedelta(hours=4)
        batches.record_step(tech, step, RecordStep(**data))
        batches.verify_step(tech2, step, signer=_signer(tech2, password))


PASSING_VALUES = {"VIAB": "92", "COUNT": "120", "CD73": "98.7", "CD90": "99.1", "CD105": "97.4", "CD45": "0.4",
                  "CD34": "0.3", "CD14": "0.6", "CD19": "0.2", "HLADR": "0.8", "IPVIAB": "94", "STER": "no growth",
                  "MYCO": "not detected", "ENDO": "0.12", "PROT": "1.8", "CD34DOSE": "4.6"}


def _test_results(batch, analysts: tuple[User, User], password: str, rng: random.Random, *,
                  pending_sterility: bool = False, failing: dict[str, str] | None = None) -> None:
    """Results for every test of the frozen specification, each verified by the second analyst."""
    from cellfactory.qc import services as qc
    from cellfactory.qc.commands import EnterResult

    analyst, verifier = analysts
    # Sampled now: after the batch started (the demo starts its batches now) and not in the future.
    sampled = utcnow()
    for test in batch.specification.tests:
        data: dict[str, Any] = {"test": test.code, "sample_id": f"{batch.number}-{test.code}", "sampled_at": sampled,
                                "instrument": "NC-01" if test.code in ("VIAB", "COUNT") else None,
                                "raw_data_reference": f"LIMS {batch.number}/{test.code}"}
        if test.code == "STER" and pending_sterility:
            # The final read is due after the test's incubation (7 days, BacT/ALERT).
            day = sampled.astimezone(ZoneInfo(batch.site.timezone)).date()
            data.update(pending=True, final_read_due=day + dt.timedelta(days=test.incubation_days or 7))
        else:
            data["value"] = (failing or {}).get(test.code, PASSING_VALUES[test.code])
        result = qc.enter_result(analyst, batch, EnterResult(**data))
        qc.verify_result(verifier, result, signer=_signer(verifier, password))


def _advance(batch, target: BatchStatus, tech: User, analysts: tuple[User, User], qa: User, qp: User,
             password: str, rng: random.Random) -> None:
    from cellfactory.qc import services as qc
    from cellfactory.qc.commands import RecordFinalRead

    def go(who: User, to: BatchStatus, reason: str, signed: bool = False) -> None:
        lifecycle.transition(who, batch, to, reason=reason, signer=_signer(who, password) if signed else None)

    go(tech, S.AWAITING_QC, "Manufacturing record complete and verified")
    if target == S.AWAITING_QC:
        return
    if target == S.ON_HOLD:
        # An out-of-specification viability: the deviation opens and the batch goes on hold by itself.
        _test_results(batch, analysts, password, rng, failing={"VIAB": "64"})
        return
    # Conditionally released, then (for the last two) the sterility final read grows after release.
    conditional = target in (S.CONDITIONALLY_RELEASED, S.ON_HOLD_AFTER_RELEASE, S.RECALLED)
    _test_results(batch, analysts, password, rng, pending_sterility=conditional or target == S.RELEASED)
    go(analysts[0], S.AWAITING_QA_REVIEW, "Release testing complete and verified")
    if target == S.AWAITING_QA_REVIEW:
        return
    go(qa, S.AWAITING_CERTIFICATION, "Batch record reviewed: complete and consistent", signed=True)
    if target == S.AWAITING_CERTIFICATION:
        return
    if target == S.REJECTED:
        go(qp, S.REJECTED, "Rejected: cell count below the validated dose for the trial", signed=True)
        return
    go(qp, S.CONDITIONALLY_RELEASED, "Sterility pending (7-day read due); all other release tests conform",
       signed=True)
    if target in (S.ON_HOLD_AFTER_RELEASE, S.RECALLED):
        # Growth after release: the batch goes on hold after release by itself, with a critical deviation and a
        # notice to the site; QA recalls one of the two after the identification.
        [pending] = qc.pending_tests(batch)
        qc.record_final_read(analysts[0], pending.reportable, RecordFinalRead(
            value="growth", raw_data_reference="BacT/ALERT day 4: aerobic bottle positive"))
        if target == S.RECALLED:
            go(qa, S.RECALLED, "Growth confirmed: Staphylococcus epidermidis identified; batch recalled")
        return
    if target == S.RELEASED:
        [pending] = qc.pending_tests(batch)
        qc.record_final_read(analysts[0], pending.reportable, RecordFinalRead(
            value="no growth", raw_data_reference="BacT/ALERT day 7"))
        qc.verify_result(analysts[1], pending.reportable, signer=_signer(analysts[1], password))
        go(qp, S.RELEASED, "Sterility final read: no growth. Final certification.", signed=True)

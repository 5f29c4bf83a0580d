"""Issue 17: what a process step declares of its operator (aseptic, the SOPs it is done by, the qualifications it
requires), carried to each batch step at the start; and a deviation holding every batch one event put in question
(an instrument out of tolerance, an excursion in a cleanroom), blocking each of them until QA closes it."""

from __future__ import annotations

import html

import pytest
import sqlalchemy as sa

from cellfactory.batches import services as batch_services
from cellfactory.batches.models import Batch
from cellfactory.core.errors import ValidationFailed
from cellfactory.deviations import services as deviation_services
from cellfactory.deviations.models import Classification, Deviation, DeviationBatch, DeviationSource
from cellfactory.equipment import services as equipment_services
from cellfactory.equipment.commands import OpenImpactDeviation, RecordEvent
from cellfactory.equipment.models import Equipment
from cellfactory.extensions import db
from cellfactory.lifecycle import services as lifecycle
from cellfactory.lifecycle.equipment import batch_uses, open_batch_deviation
from cellfactory.materials import services as material_services
from cellfactory.materials.commands import ReceiveMaterial
from cellfactory.products import services as product_services
from cellfactory.products.commands import CreateDraft
from cellfactory.products.forms import parse_steps, steps_text
from cellfactory.products.models import SpecificationVersion
from tests.batch_helpers import (
    UCMSC_STEPS,
    batch_start,
    past_receipt_data,
    signing,
    start_command,
    step_command,
    step_data,
)
from tests.conftest import login, refetch
from tests.test_api import last_seq
from tests.test_api_manufacturing import API, world  # noqa: F401 - the fixture

SEEDING_LINE = ("P0 | Seeding P0 | passage | aseptic | sop:sop-mfg-001 | qualification:media_fill | "
                "qualification:gowning")
DECLARED = [*UCMSC_STEPS[:1],
            {"code": "P0", "name": "Seeding P0", "kind": "passage", "aseptic": True, "sops": ["SOP-MFG-001"],
             "qualifications": ["media_fill", "gowning"]},
            *UCMSC_STEPS[2:]]


def _text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def _latest(code: str = "UCMSC") -> SpecificationVersion:
    return db.session.scalars(sa.select(SpecificationVersion).order_by(SpecificationVersion.id.desc())).first()


# --- the process template -------------------------------------------------------------------------------------


def test_the_template_line_says_what_a_step_asks_and_is_given_back_the_same_way():
    (step,) = parse_steps(SEEDING_LINE)
    assert step == {"code": "P0", "name": "Seeding P0", "kind": "passage", "aseptic": True,
                    "sops": ["sop-mfg-001"], "qualifications": ["media_fill", "gowning"]}
    stored = CreateDraft.parse(dict(change_summary="v", steps=[step])).steps[0]
    assert stored.sops == ["SOP-MFG-001"] and stored.aseptic is True  # codes kept in capitals, as the register
    assert steps_text([DECLARED[1]]) == ("P0 | Seeding P0 | passage | aseptic | sop:SOP-MFG-001 | "
                                         "qualification:media_fill | qualification:gowning")
    for line in ("P0 | Seeding | passage | sterile", "P0 | Seeding | passage | sop:", "P0 | Seeding | aseptic"):
        with pytest.raises(ValidationFailed, match="Line 1"):
            parse_steps(line)


def test_qa_declares_them_on_the_draft_page_and_a_bad_declaration_saves_nothing(client, world):  # noqa: F811
    login(client, "qa.bg")
    assert client.post("/products/UCMSC/specifications", data={
        "draft-change_summary": "aseptic seeding declared", "draft-steps": "ISO | Isolation"}).status_code == 302
    number = _latest().number
    url = f"/products/UCMSC/specifications/{number}/edit"
    base = {"draft-change_summary": "aseptic seeding declared", "draft-max_passage": "5"}
    refused = {
        "ISO | Isolation | step | sop:SOP 1": "letters, digits",
        "ISO | Isolation | step | qualification:cleanroom": "Use one of: media_fill or gowning",
        "ISO | Isolation | step | sop:SOP-A | sop:sop-a": "name each SOP and qualification once",
        "ISO | Isolation | step | sop:SOP-\u202eA": "",
        "ISO | Isolation | step | sop:" + "S" * 41: "",
    }
    for steps, words in refused.items():
        before = last_seq()
        response = client.post(url, data=base | {"draft-steps": steps})
        assert response.status_code == 422, steps
        page = _text(response)
        assert 'class="error-summary' in page and words in page, steps
        assert last_seq() == before and _latest().steps == [{"code": "ISO", "name": "Isolation", "kind": "step"}]
    response = client.post(url, data=base | {"draft-steps": "ISO | Isolation\n" + SEEDING_LINE})
    assert response.status_code == 302, _text(response)
    assert _latest().steps[1] == DECLARED[1]
    page = _text(client.get(f"/products/UCMSC/specifications/{number}"))
    assert "aseptic | sop:SOP-MFG-001 | qualification:media_fill | qualification:gowning" in page


@pytest.mark.parametrize("step, words", [
    ({"aseptic": "yes"}, "Must be true or false."),
    ({"aseptic": 1}, "Must be true or false."),
    ({"sops": "SOP-MFG-001"}, "valid list"),
    ({"sops": ["SOP\x00X"]}, "control characters"),
    ({"sops": ["\ud800"]}, "could not be read"),
    ({"sops": ["SOP 1"]}, "letters, digits"),
    ({"sops": [f"SOP-{n}" for n in range(11)]}, "at most 10"),
    ({"qualifications": ["cleanroom"]}, "Use one of: media_fill or gowning."),
    ({"qualifications": ["media_fill", "media_fill"]}, "name each SOP and qualification once"),
])
def test_the_api_refuses_a_malformed_declaration(client, world, step, words):  # noqa: F811
    """Said on the template's steps (the field the page shows them in), and nothing saved."""
    body = {"change_summary": "declared", "steps": [{"code": "ISO", "name": "Isolation"} | step]}
    before = last_seq()
    response = client.post(f"{API}/products/UCMSC/specifications", json=body, headers=world.auth("qa"))
    assert response.status_code == 422, response.get_data(as_text=True)
    assert words in response.get_json()["error"]["fields"]["steps"], response.get_json()
    assert last_seq() == before and _latest().number == 1


def test_declarations_are_signed_with_the_template_and_copied_to_each_batch_step(client, world, sites):  # noqa: F811
    response = client.post(f"{API}/products/UCMSC/specifications", headers=world.auth("qa"),
                           json={"change_summary": "aseptic seeding", "steps": DECLARED})
    assert response.status_code == 201, response.get_data(as_text=True)
    assert response.get_json()["steps"][1] == DECLARED[1]
    draft = _latest()
    assert draft.signature_content()["steps"][1]["sops"] == ["SOP-MFG-001"]
    # a step that declares nothing stores nothing more: older approvals keep the content they signed
    assert draft.steps[0] == {"code": "ISO", "name": "Isolation (explant)", "kind": "step"}
    product_services.approve(refetch(world.plant.approver), draft, signer=signing(world.plant.approver))
    batch = batch_services.start_batch(refetch(world.plant.tech), sites["BG"], start_command(
        sites["BG"], "UCMSC", [world.din], started_at=batch_start()))
    steps = {s.code: s for s in refetch(batch).steps}
    assert steps["P0"].aseptic is True and steps["P0"].required_sops == ["SOP-MFG-001"]
    assert steps["P0"].required_qualifications == ["media_fill", "gowning"]
    assert (steps["ISO"].aseptic, steps["ISO"].required_sops, steps["ISO"].required_qualifications) == (False, [], [])


# --- a deviation holding several batches ----------------------------------------------------------------------


def _second_batch(world, sites) -> Batch:  # noqa: F811
    second = material_services.receive_material(refetch(world.plant.tech), sites["BG"],
                                                ReceiveMaterial.of(past_receipt_data(din="=A99912600045600")))
    return batch_services.start_batch(refetch(world.plant.tech), sites["BG"], start_command(
        sites["BG"], "UCMSC", [second.din], started_at=batch_start()))


def _two_batches_using_the_cabinet(world, sites) -> tuple[Batch, Batch]:  # noqa: F811
    first = batch_services.start_batch(refetch(world.plant.tech), sites["BG"], start_command(
        sites["BG"], "UCMSC", [world.din], started_at=batch_start()))
    second = _second_batch(world, sites)
    for batch in (first, second):
        step = refetch(batch).steps[0]
        batch_services.record_step(refetch(world.plant.tech), step, step_command(step, step_data()))
    return refetch(first), refetch(second)


def test_one_out_of_tolerance_calibration_opens_one_deviation_holding_every_batch(client, world, sites):  # noqa: F811
    first, second = _two_batches_using_the_cabinet(world, sites)
    cabinet = db.session.scalar(sa.select(Equipment).where(Equipment.code == "BSC-01"))
    event = equipment_services.record_event(refetch(world.plant.tech), cabinet, RecordEvent.parse({
        "kind": "calibration", "performed_on": equipment_services.site_today(cabinet.site).isoformat(),
        "result": "out_of_tolerance", "reference": "CAL-OOT"}))
    (number,) = equipment_services.open_impact_deviation(
        refetch(world.plant.qa), event, OpenImpactDeviation.parse({"title": "BSC-01 out of tolerance",
                                                                   "classification": "major"}),
        uses=batch_uses, open_deviation=open_batch_deviation)
    deviation = db.session.scalar(sa.select(Deviation).where(Deviation.number == number))
    assert deviation.source == DeviationSource.EQUIPMENT and deviation.batch_id == first.id
    assert deviation.batch_ids == [first.id, second.id]
    assert first.number in deviation.description and second.number in deviation.description
    for batch in (first, second):
        assert [d.number for d in deviation_services.blocking(batch.id)] == [number]
        assert [d.number for d in lifecycle.open_deviations(refetch(batch))] == [number]
    # the API and the pages name both batches
    found = client.get(f"{API}/deviations?batch={second.number}", headers=world.auth("qa")).get_json()
    assert [d["number"] for d in found["items"]] == [number]
    assert found["items"][0]["batches"] == [first.number, second.number]
    login(client, "qa.bg")
    listed = _text(client.get("/deviations/"))
    assert first.number in listed and second.number in listed
    page = _text(client.get(f"/deviations/{number}"))
    assert "Other batches it holds" in page and f"/batches/{second.number}" in page


def test_every_deviation_of_a_batch_holds_it_and_a_link_is_in_the_audit_trail(world, sites):  # noqa: F811
    first, second = _two_batches_using_the_cabinet(world, sites)
    qa = refetch(world.plant.qa)
    deviation = deviation_services.create_deviation(qa, sites["BG"], title="Cleanroom excursion",
                                                    description="Grade B room, settle plate 7 CFU",
                                                    classification=Classification.MAJOR,
                                                    source=DeviationSource.ENVIRONMENT, batch_id=second.id,
                                                    linked_batch_ids=[first.id, second.id])
    db.session.commit()
    links = db.session.scalars(sa.select(DeviationBatch).where(DeviationBatch.deviation_id == deviation.id)
                               .order_by(DeviationBatch.id)).all()
    assert [link.batch_id for link in links] == [second.id, first.id]  # the first batch first, each once
    from cellfactory.audit.models import AuditEntry

    entries = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.entity_type == "deviation_batch")).all()
    assert {str(link.id) for link in links} <= {e.entity_id for e in entries}

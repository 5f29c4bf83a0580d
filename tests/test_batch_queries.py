"""How many SQL statements the batch page and the API batch cost (issue #8): at most 15, and the same for a
small batch as for a larger one (more steps, uses, passages, results, signatures and a deviation), so that
neither grows with the batch. The donor trace and the batch lists likewise stay the same whatever they list."""

from __future__ import annotations

import datetime as dt
import re

import pytest
import sqlalchemy as sa

from cellfactory.auth.models import Role
from cellfactory.batches import services
from cellfactory.batches.models import Batch, BatchStatus
from cellfactory.core.clock import utcnow
from cellfactory.deviations.commands import OpenDeviation
from cellfactory.deviations.services import for_batch
from cellfactory.extensions import db
from cellfactory.lifecycle import services as lifecycle
from cellfactory.materials import services as material_services
from cellfactory.materials.commands import ReceiveMaterial
from cellfactory.products import services as product_services
from cellfactory.products.commands import CreateDraft, CreateProduct
from cellfactory.qc.commands import RecordFinalRead
from cellfactory.qc.services import batch_results, result_verification
from cellfactory.signatures import services as signature_services
from tests.batch_helpers import (
    UCMSC_STEPS,
    UCMSC_TESTS,
    batch_start,
    build_plant,
    complete_qc,
    passage_data,
    past_receipt_data,
    signing,
    start_command,
    step_command,
    step_data,
)
from tests.conftest import login, make_user, refetch
from tests.test_api import bearer, new_token

S = BatchStatus
# Issue #8: at most 15 statements a request. A test request runs inside the test's transaction, so it does not
# issue the BEGIN that a real one does on SQLite: one fewer here.
MAX_STATEMENTS = 15 - 1

# The larger product: four more passages, two more tests.
LARGE_STEPS = [*UCMSC_STEPS[:4], *({"code": f"P{n}", "name": f"Passage {n}", "kind": "passage"} for n in range(3, 7)),
               UCMSC_STEPS[4]]
LARGE_TESTS = [*UCMSC_TESTS,
               {"code": "CD90", "name": "CD90+", "method": "Flow cytometry", "unit": "%", "stage": "release",
                "criterion": "range", "lower": "95"},
               {"code": "CD45", "name": "CD45+", "method": "Flow cytometry", "unit": "%", "stage": "release",
                "criterion": "range", "upper": "2"}]


class Statements:
    """The statements the app's engine runs inside the block (savepoints of the test's own transaction aside)."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    def _on_execute(self, conn, cursor, statement, parameters, context, executemany) -> None:  # noqa: ANN001
        if not statement.lstrip().upper().startswith(("SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT")):
            self.statements.append(statement)

    def __enter__(self) -> Statements:
        sa.event.listen(db.engine, "before_cursor_execute", self._on_execute)
        return self

    def __exit__(self, *exc: object) -> None:
        sa.event.remove(db.engine, "before_cursor_execute", self._on_execute)

    def __len__(self) -> int:
        return len(self.statements)

    def __str__(self) -> str:
        return "\n".join(" ".join(s.split())[:160] for s in self.statements)


def counted(client, path: str, **kwargs) -> tuple[int, Statements]:
    client.get(path, **kwargs)  # once before: what the first request of a session reads once is not counted
    with Statements() as statements:
        response = client.get(path, **kwargs)
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    return len(statements), statements


def _iso(hours_ago: float) -> str:
    return (utcnow() - dt.timedelta(hours=hours_ago)).isoformat()


def _manufacture(plant, batch: Batch, *, uses: int) -> None:
    """Record every step of the batch in the past, a passage every 24 h (cumulative PD growing), each step with
    `uses` reagent uses and two pieces of equipment, then have the second technician verify each."""
    lots = [plant.lots["M-001"], plant.lots["PL-17"]][:uses]
    reagents = [{"lot_id": lot.id, "quantity": str(10 + i), "unit": "mL"} for i, lot in enumerate(lots)]
    steps = refetch(batch).steps
    hours = 24 * (len(steps) + 1)
    for step in steps:
        step = refetch(step)
        if step.kind.value == "passage":
            number = int(step.code[1:])
            data = passage_data(number, 1e6, 4e6, hours, hours - 20, reagents=reagents)
        else:
            data = step_data(started_at=_iso(hours), ended_at=_iso(hours - 1), equipment=["BSC-01", "INC-01"],
                             reagents=reagents)
        services.record_step(refetch(plant.tech), step, step_command(step, data))
        services.verify_step(refetch(plant.tech2), refetch(step), signer=signing(plant.tech2))
        hours -= 24


def _to_review(plant, batch: Batch, *, pending: tuple[str, ...] = ()) -> Batch:
    """Manufacturing done, every result entered (`pending` ones left incubating) and verified: awaiting review."""
    lifecycle.transition(refetch(plant.tech), refetch(batch), S.AWAITING_QC, reason="manufacturing done")
    complete_qc(plant, batch, pending=pending, values={"CD90": "97.2", "CD45": "0.4"})
    lifecycle.transition(refetch(plant.qc), refetch(batch), S.AWAITING_QA_REVIEW, reason="qc done")
    return refetch(batch)


def _review(plant, batch: Batch) -> Batch:
    lifecycle.transition(refetch(plant.reviewer), refetch(batch), S.AWAITING_CERTIFICATION, reason="record complete",
                        signer=signing(plant.reviewer))
    return refetch(batch)


def _release(plant, batch: Batch, *, pending: tuple[str, ...] = ()) -> Batch:
    _review(plant, _to_review(plant, batch, pending=pending))
    if pending:
        lifecycle.transition(refetch(plant.qp), refetch(batch), S.CONDITIONALLY_RELEASED, reason="QP decision",
                            signer=signing(plant.qp), details=None)
        from cellfactory.qc import services as qc_services

        for result in batch_results(refetch(batch)):
            if result.verdict.value == "pending":
                qc_services.record_final_read(refetch(plant.qc), refetch(result),
                                              RecordFinalRead.parse({"value": "no growth"}))
                qc_services.verify_result(refetch(plant.qc2), refetch(result), signer=signing(plant.qc2))
    lifecycle.transition(refetch(plant.qp), refetch(batch), S.RELEASED, reason="QP decision", signer=signing(plant.qp))
    return refetch(batch)


@pytest.fixture
def plant(users, sites):
    plant = build_plant(users, sites)
    plant.reviewer = make_user("qa.reviewer", [(Role.QA, "BG")], signing=True)
    return plant


def _small_batch(plant, sites) -> Batch:
    """UC-MSC: 5 steps with one reagent use each, recorded and verified."""
    batch = services.start_batch(refetch(plant.tech), sites["BG"],
                                 start_command(sites["BG"], "UCMSC", [plant.material_din], started_at=batch_start()))
    _manufacture(plant, batch, uses=1)
    return refetch(batch)


def _large_batch(plant, sites) -> Batch:
    """Two pooled cords, 9 steps with two reagent uses each, recorded and verified, and a minor deviation."""
    qa = refetch(plant.qa)
    product = product_services.create_product(qa,
        CreateProduct.parse(dict(code="XLMSC", name="Extended MSC", dose_unit="cells/kg")))
    spec = product_services.create_draft(qa, product,
        CreateDraft.parse(dict(change_summary="long expansion", steps=LARGE_STEPS, max_passage=8,
                               max_cumulative_pd="60", tests=LARGE_TESTS)))
    product_services.approve(refetch(plant.approver), spec, signer=signing(plant.approver))
    materials = [material_services.receive_material(refetch(plant.tech), sites["BG"],
                                                    ReceiveMaterial.of(past_receipt_data(din=din)))
                 for din in ("=A99912600045600", "=A99912600078900")]
    material_services.print_labels(refetch(plant.tech), materials)
    batch = services.start_batch(refetch(plant.tech), sites["BG"],
                                 start_command(sites["BG"], "XLMSC", [m.din for m in materials],
                                               started_at=batch_start()))
    _manufacture(plant, batch, uses=2)
    lifecycle.open_deviation(refetch(plant.tech), sites["BG"], OpenDeviation.parse({
        "title": "Incubator door left ajar", "description": "Found ajar for 2 minutes during P3.",
        "classification": "minor", "batch": batch.number, "step": "P3"}))
    return refetch(batch)


@pytest.fixture
def small(plant, sites) -> Batch:
    """UC-MSC: 5 steps with one reagent use each, 3 results, reviewed and certified (2 batch signatures)."""
    return _release(plant, _small_batch(plant, sites))


@pytest.fixture
def large(plant, sites) -> Batch:
    """Two pooled cords, 9 steps with two reagent uses each, 5 results (one final read after a conditional
    release), a minor deviation, reviewed, conditionally released and certified (3 batch signatures)."""
    return _release(plant, _large_batch(plant, sites), pending=("STER",))


def test_the_batches_differ_in_size(small, large):
    small, large = refetch(small), refetch(large)
    assert small.status == large.status == S.RELEASED
    assert len(large.steps) > len(small.steps) and len(large.materials) > len(small.materials)
    assert sum(len(s.reagent_uses) for s in large.steps) > sum(len(s.reagent_uses) for s in small.steps)
    assert len(batch_results(large)) > len(batch_results(small))
    assert len(signature_services.signatures_for(large)) > len(signature_services.signatures_for(small))
    assert for_batch(large.id) and not for_batch(small.id)


def test_batch_page_and_api_batch_cost_the_same_for_a_small_and_a_larger_batch(client, users, small, large):
    login(client, "qa.bg")
    token = bearer(new_token(refetch(users["qa"])))
    page_small, seen_small = counted(client, f"/batches/{small.number}")
    page_large, seen_large = counted(client, f"/batches/{large.number}")
    assert page_small == page_large, f"batch page: {page_small} vs {page_large}\n{seen_small}\n--\n{seen_large}"
    assert page_large <= MAX_STATEMENTS, str(seen_large)
    api_small, seen_small = counted(client, f"/api/v1/batches/{small.number}", headers=token)
    api_large, seen_large = counted(client, f"/api/v1/batches/{large.number}", headers=token)
    assert api_small == api_large, f"API batch: {api_small} vs {api_large}\n{seen_small}\n--\n{seen_large}"
    assert api_large <= MAX_STATEMENTS, str(seen_large)


def test_batch_page_still_shows_what_it_did(client, small, large):
    """Reading the signatures at once changes nothing shown: every step verified, every decision valid."""
    login(client, "qa.bg")
    page = client.get(f"/batches/{large.number}").get_data(as_text=True)
    assert page.count('badge-ok">verified') == len(refetch(large).steps)
    assert "no longer holds" not in page
    # Each decision's status as checked one by one: the final certification valid, the two before it signed
    # a record that the final sterility read has changed since.
    batch = refetch(large)
    expected = [signature_services.verify(s, batch).value for s in signature_services.signatures_for(batch)]
    section = page.split('id="signatures"')[1].split("</section>")[0]
    assert re.findall(r'signature-status">Signature: ([^<]+)<', section) == expected
    assert len(expected) == 3 and expected[-1] == "valid"


def test_step_verification_and_blockers_read_the_signatures_once(plant, sites):
    """A batch in process: the page's checks (verified? who entered it?) cost the same for 5 steps as for 9."""
    batch = services.start_batch(refetch(plant.tech), sites["BG"],
                                 start_command(sites["BG"], "UCMSC", [plant.material_din], started_at=batch_start()))
    _manufacture(plant, batch, uses=1)
    batch = refetch(batch)
    index = services.record_signatures(batch)
    with Statements() as statements:
        assert services.manufacturing_blockers(batch, index) == []
        assert all(services.step_verification(s, index) is not None for s in batch.steps)
    assert len(statements) == 0
    with Statements() as statements:
        entered = services.entered_by_steps(batch.steps)
    assert len(statements) == 1
    assert all(plant.tech.id in people and plant.tech2.id not in people for people in entered.values())
    assert entered == {s.id: services.entered_by(s) for s in batch.steps}


def test_signed_batch_content_is_unchanged(plant, small, large):
    """The batch's signed content reads its results and deviations in two statements, and is what it was (the
    results and deviations as qc and deviations list them): the certification signed last still verifies."""
    for batch in (small, large):
        batch = services.get_batch(refetch(plant.qa), batch.number)
        expected = {
            "results": [r.signature_content() | {"invalidated": r.invalidation_reason} for r in batch_results(batch)],
            "deviations": [{"number": d.number, "classification": d.classification.value, "status": d.status.value}
                           for d in for_batch(batch.id)]}
        with Statements() as statements:
            content = batch.signature_content()
        assert len(statements) == 2, str(statements)
        assert {key: content[key] for key in expected} == expected
        assert signature_services.verify(signature_services.signatures_for(batch)[-1], batch) == \
            signature_services.SignatureStatus.VALID


def test_in_process_batch_page_costs_the_same_for_more_steps(client, plant, sites):
    """The technician's view of batches in process, with verification forms and notes."""
    small = services.start_batch(refetch(plant.tech), sites["BG"],
                                 start_command(sites["BG"], "UCMSC", [plant.material_din], started_at=batch_start()))
    _manufacture(plant, small, uses=1)
    qa = refetch(plant.qa)
    product = product_services.create_product(qa,
        CreateProduct.parse(dict(code="XLMSC", name="Extended MSC", dose_unit="cells/kg")))
    spec = product_services.create_draft(qa, product,
        CreateDraft.parse(dict(change_summary="long expansion", steps=LARGE_STEPS, max_passage=8,
                               max_cumulative_pd="60", tests=LARGE_TESTS)))
    product_services.approve(refetch(plant.approver), spec, signer=signing(plant.approver))
    material = material_services.receive_material(refetch(plant.tech), sites["BG"],
                                                  ReceiveMaterial.of(past_receipt_data(din="=A99912600045600")))
    large = services.start_batch(refetch(plant.tech), sites["BG"],
                                 start_command(sites["BG"], "XLMSC", [material.din], started_at=batch_start()))
    for step in refetch(large).steps[:6]:  # recorded, not verified: forms for the second technician
        hours = 200 - 10 * step.position
        data = passage_data(int(step.code[1:]), 1e6, 4e6, hours, hours - 5) if step.kind.value == "passage" \
            else step_data(started_at=_iso(hours), ended_at=_iso(hours - 1))
        services.record_step(refetch(plant.tech), refetch(step), step_command(refetch(step), data))
    login(client, "technician2.bg")
    count_small, seen_small = counted(client, f"/batches/{small.number}")
    count_large, seen_large = counted(client, f"/batches/{large.number}")
    page = client.get(f"/batches/{large.number}").get_data(as_text=True)
    assert page.count("as second person") == 6
    assert count_small <= MAX_STATEMENTS and count_large <= MAX_STATEMENTS, f"{seen_small}\n--\n{seen_large}"
    # The small batch is complete (nothing to verify); the large one has six steps to verify and three to do:
    # the large page reads once more (who entered the steps), never once per step.
    assert count_large == count_small + 1, f"{seen_small}\n--\n{seen_large}"


def test_batch_lists_and_trace_do_not_load_the_manufacturing_record(client, users, small, large):
    """A list or a trace names batches; it reads no step, use or passage, whatever their number."""
    login(client, "qa.bg")
    token = bearer(new_token(refetch(users["qa"])))
    record_tables = ("batch_step", "step_equipment", "step_reagent", "passage")
    donor = refetch(small).materials[0].material.donor.code
    for path, headers in ((f"/trace/donors/{donor}", {}), (f"/api/v1/trace/donors/{donor}", token),
                          ("/api/v1/batches?status=released", token), ("/batches/?status=released", {})):
        count, seen = counted(client, path, headers=headers)
        assert count <= MAX_STATEMENTS, str(seen)
        assert not any(f"FROM {table} " in statement for statement in seen.statements for table in record_tables), \
            f"{path}:\n{seen}"
    trace = client.get(f"/api/v1/trace/donors/{donor}", headers=token).get_json()
    assert {b["number"] for d in trace["donors"] for m in d["materials"] for b in m["batches"]} == \
        {small.number, large.number}


# The QA review and QP certification pages show the checklist, the people involved, the results and every signed
# decision, each checked against the record as it is now: a few more reads than the batch page (18 now: the user and
# site, the batch and its record, its results, the signatures of the batch, steps and results, who entered the steps,
# the people involved, the decisions, the tests, the deviations and the label prints), as many for any batch.
MAX_RELEASE_STATEMENTS = 20 - 1


def _signature_statuses(page: str, section: str) -> list[str]:
    return re.findall(r'signature-status">Signature: ([^<]+)<', page.split(f'id="{section}"')[1].split("</section>")[0])


def test_release_pages_cost_the_same_for_a_small_and_a_larger_batch(client, small, large):
    """A certified batch's review and certification pages: more steps, results, signatures and a deviation read
    nothing more."""
    for username, page in (("qa.bg", "review"), ("qp.bg", "certification")):
        login(client, username)
        count_small, seen_small = counted(client, f"/releases/{small.number}/{page}")
        count_large, seen_large = counted(client, f"/releases/{large.number}/{page}")
        assert count_small == count_large, f"{page}: {count_small} vs {count_large}\n{seen_small}\n--\n{seen_large}"
        assert count_large <= MAX_RELEASE_STATEMENTS, f"{page}:\n{seen_large}"
        client.post("/auth/logout")


def test_api_review_and_certification_cost_the_same_for_a_small_and_a_larger_batch(client, users, small, large):
    """The API's review and certification read the record's facts once, as the pages do."""
    for role, page in (("qa", "review"), ("qp", "certification")):
        token = bearer(new_token(refetch(users[role])))
        count_small, seen_small = counted(client, f"/api/v1/batches/{small.number}/{page}", headers=token)
        count_large, seen_large = counted(client, f"/api/v1/batches/{large.number}/{page}", headers=token)
        assert count_small == count_large, f"API {page}: {count_small} vs {count_large}\n{seen_small}\n--\n{seen_large}"
        assert count_large <= MAX_RELEASE_STATEMENTS, f"API {page}:\n{seen_large}"


def test_release_pages_with_a_decision_to_sign_cost_the_same(client, plant, sites):
    """While QA may sign the review, and then while the QP may take each decision, every check the page shows
    before signing (checklist, blockers of each decision, people involved) comes from one read of the record."""
    small = _to_review(plant, _small_batch(plant, sites))
    large = _to_review(plant, _large_batch(plant, sites), pending=("STER",))
    login(client, "qa.bg")
    count_small, seen_small = counted(client, f"/releases/{small.number}/review")
    count_large, seen_large = counted(client, f"/releases/{large.number}/review")
    assert "Sign: Reviewed" in client.get(f"/releases/{large.number}/review").get_data(as_text=True)
    assert count_small == count_large, f"review: {count_small} vs {count_large}\n{seen_small}\n--\n{seen_large}"
    assert count_large <= MAX_RELEASE_STATEMENTS, str(seen_large)
    client.post("/auth/logout")
    small, large = _review(plant, small), _review(plant, large)
    login(client, "qp.bg")
    count_small, seen_small = counted(client, f"/releases/{small.number}/certification")
    count_large, seen_large = counted(client, f"/releases/{large.number}/certification")
    page = client.get(f"/releases/{large.number}/certification").get_data(as_text=True)
    # Sterility is pending: the page offers the conditional release and says why the certification must wait.
    assert "Sign: Conditionally released, sterility pending" in page and "Sterility is still pending" in page
    assert count_small == count_large, f"certification: {count_small} vs {count_large}\n{seen_small}\n--\n{seen_large}"
    assert count_large <= MAX_RELEASE_STATEMENTS, str(seen_large)


def test_release_pages_still_show_what_they_did(client, plant, large):
    """Read at once, the checklist, the people involved and each decision's signature status are what the services
    say one by one: the two decisions before the final sterility read still hold, the read being the progress the
    conditional release expects."""
    from cellfactory.releases import services as release_services
    from cellfactory.releases.views import involved

    batch = services.get_batch(refetch(plant.qa), large.number)
    expected = [signature_services.verify(d.signature, batch).value for d in release_services.decisions_for(batch)]
    assert expected == ["valid"] * 3
    names = [f"<strong>{person.full_name}</strong>" for person, _ in involved(batch)]
    items = release_services.checklist(batch)
    for username, page in (("qa.bg", "review"), ("qp.bg", "certification")):
        login(client, username)
        html = client.get(f"/releases/{large.number}/{page}").get_data(as_text=True)
        assert _signature_statuses(html, "decisions") == expected
        people = html.split('id="involved"')[1].split("</section>")[0]
        # Two technicians, two analysts and the QA reviewer (who may not certify the batch either).
        assert re.findall(r"<strong>[^<]+</strong>", people) == names and len(names) == 5
        assert "<strong>Qa.Reviewer Tester</strong>" in names
        checklist = html.split('id="checklist"')[1].split("</section>")[0]
        assert checklist.count("check-ok") == sum(item.ok for item in items) == len(items)
        client.post("/auth/logout")


def test_qc_page_costs_the_same_for_more_results(client, small, large):
    """A batch's QC page: more results, each with its verifications (one of them no longer holding), read nothing
    more."""
    login(client, "qa.bg")  # QA: the invalidation form of every valid result
    count_small, seen_small = counted(client, f"/qc/batches/{small.number}")
    count_large, seen_large = counted(client, f"/qc/batches/{large.number}")
    assert count_small == count_large, f"QC page: {count_small} vs {count_large}\n{seen_small}\n--\n{seen_large}"
    assert count_large <= MAX_STATEMENTS, str(seen_large)


def test_qc_page_still_shows_what_it_did(client, large):
    """Each result's signatures with their status as checked one by one: the sterility result's verification of its
    pending entry still holds for the entry it attested, but only the verification of the final read verifies it."""
    login(client, "qa.bg")
    page = client.get(f"/qc/batches/{large.number}").get_data(as_text=True)
    for result in batch_results(refetch(large)):
        section = page.split(f'id="result-{result.id}"')[1].split('class="qc-result ')[0]
        statuses = [signature_services.verify(s, result).value for s in signature_services.signatures_for(result)]
        assert section.count("no longer holds") == statuses.count("record changed since signing: re-sign required")
        assert section.count('signature-status">Signature: valid<') == statuses.count("valid") >= 1
        assert ('badge-ok">verified<' in section) is (result_verification(result) is not None)
    assert page.count("no longer holds") == 0

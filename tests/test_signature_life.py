"""Signatures stay valid through the normal life of a record (issue 14).

A signature attests the content its signer was shown. The process moving on (statuses, a pending sterility result
receiving its final read, a deviation closed, later decisions) leaves every signature of the batch, its steps and its
results valid, on every path of the batch life cycle. A change to what a signer attested, made behind the
application's back, is reported on exactly the signatures that attested it, naming what changed; the others hold.
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from cellfactory.batches import services as batch_services
from cellfactory.batches.models import Batch, BatchStatus, BatchStep, Passage
from cellfactory.deviations import services as deviation_services
from cellfactory.extensions import db
from cellfactory.lifecycle import services as lifecycle
from cellfactory.qc import services as qc
from cellfactory.qc.commands import RecordFinalRead
from cellfactory.qc.models import QcResult
from cellfactory.releases import services as releases
from cellfactory.releases.commands import DecisionDetails
from cellfactory.signatures import services as signature_services
from cellfactory.signatures.models import Meaning, Signature
from cellfactory.signatures.services import SignatureStatus
from tests.batch_helpers import batch_start, complete_qc, run_batch_to_awaiting_qc, signing, start_command
from tests.test_release_pages import (
    OOS_DETAILS,
    again,
    awaiting_certification,
    awaiting_review,
    certify_by_service,
    finish_sterility,
    oos_awaiting_certification,
    release_plant,
    review_by_service,
    status_of,
)

S = BatchStatus
CHANGED = SignatureStatus.RECORD_CHANGED


@pytest.fixture
def plant(users, sites):
    return release_plant(users, sites)


def signed_records(batch: Batch) -> list:
    """The batch, its steps, its results and its deviations: every record of the batch that carries signatures."""
    batch = again(batch)
    results = list(db.session.scalars(sa.select(QcResult).where(QcResult.batch_id == batch.id)))
    return [batch, *batch.steps, *results, *deviation_services.for_batch(batch.id)]


def checks(batch: Batch) -> dict[tuple[str, str, str], signature_services.SignatureCheck]:
    """Every signature of the batch's records, keyed by (record type, record id, meaning #n), with its check."""
    db.session.expire_all()
    found = {}
    for record in signed_records(batch):
        for n, signature in enumerate(signature_services.signatures_for(record)):
            found[(record.__tablename__, str(record.id), f"{signature.meaning} #{n}")] = \
                signature_services.check(signature, record)
    return found


def assert_all_valid(batch: Batch) -> dict:
    found = checks(batch)
    assert found, "the batch carries signatures"
    bad = {key: check.text for key, check in found.items() if check.status != SignatureStatus.VALID}
    assert not bad, bad
    # The batch itself carries its QA review and at least one QP decision.
    assert sum(1 for key in found if key[0] == "batch") >= 2
    return found


# --- (1) every path of the life cycle leaves every signature valid ----------------------------------------------


def test_normal_release(plant, sites):
    batch = awaiting_certification(plant, sites, pending=())
    certify_by_service(plant, batch, S.RELEASED)
    assert status_of(batch) == S.RELEASED
    assert_all_valid(batch)


def test_conditional_release_then_final_read_then_final_certification(plant, sites):
    batch = awaiting_certification(plant, sites)
    certify_by_service(plant, batch)
    assert status_of(batch) == S.CONDITIONALLY_RELEASED
    finish_sterility(plant, batch)
    certify_by_service(plant, batch, S.RELEASED)
    assert status_of(batch) == S.RELEASED
    found = assert_all_valid(batch)
    assert sum(1 for key in found if key[0] == "batch") == 3  # review, conditional, final
    # The certificate of the conditional release still matches the record.
    first = releases.certificates_for(again(batch))[0]
    assert releases.check_certificate(first.verification_token).matches
    # The sterility result is verified by the verification of its final read, not by that of its pending entry.
    sterility = next(r for r in signed_records(batch)[1:] if isinstance(r, QcResult) and r.spec_test.code == "STER")
    verifications = [s for s in signature_services.signatures_for(sterility) if s.meaning == "Verified"]
    assert len(verifications) == 2
    assert signature_services.check(verifications[0], sterility).status == SignatureStatus.VALID
    assert not signature_services.check(verifications[0], sterility).covers_current
    assert qc.result_verification(sterility).id == verifications[1].id


def test_exceptional_release_of_an_oos_batch(plant, sites):
    batch = oos_awaiting_certification(plant, sites)
    lifecycle.transition(again(plant.qp), again(batch), S.RELEASED, reason="physician request",
                              signer=signing(again(plant.qp)), meaning=Meaning.QP_OOS_SUPPLY,
                              details=DecisionDetails.parse(
                                  OOS_DETAILS | {"sponsor_notified_at": "2026-11-21T09:30:00+01:00"}))
    assert status_of(batch) == S.RELEASED
    found = assert_all_valid(batch)
    assert any(key[0] == "deviation" for key in found)  # the closed OOS deviation's signature holds too


def test_reject(plant, sites):
    batch = awaiting_certification(plant, sites, pending=())
    certify_by_service(plant, batch, S.REJECTED)
    assert status_of(batch) == S.REJECTED
    assert_all_valid(batch)


def test_hold_and_lift_then_release(plant, sites):
    batch = awaiting_review(plant, sites, pending=())
    lifecycle.transition(again(plant.qa), again(batch), S.ON_HOLD, reason="cleanroom alarm under assessment")
    assert status_of(batch) == S.ON_HOLD
    lifecycle.transition(again(plant.qa), again(batch), S.AWAITING_QA_REVIEW, reason="no impact found")
    review_by_service(plant, batch)
    certify_by_service(plant, batch, S.RELEASED)
    assert status_of(batch) == S.RELEASED
    assert_all_valid(batch)


# --- (2) a change to attested content is reported where it was attested, and only there -------------------------


def released(plant, sites) -> Batch:
    batch = awaiting_certification(plant, sites, pending=())
    certify_by_service(plant, batch, S.RELEASED)
    return again(batch)


def changed(found: dict) -> dict:
    return {key: check for key, check in found.items() if check.status != SignatureStatus.VALID}


def test_a_passage_count_changed_by_sql_is_reported_on_the_signatures_that_attested_it(plant, sites):
    batch = released(plant, sites)
    before = assert_all_valid(batch)
    step = next(s for s in again(batch).steps if s.passage is not None)
    step_id, code, old = step.id, step.code, step.passage.cells_harvested
    db.session.execute(sa.update(Passage).where(Passage.step_id == step_id)
                       .values(cells_harvested=old + 1000))
    found = changed(checks(batch))
    affected = {key for key in before if key[0] == "batch" or key[:2] == ("batch_step", str(step_id))}
    assert set(found) == affected and affected
    for key, check in found.items():
        assert check.status == CHANGED
        where = f"steps[{code}].passage.cells_harvested" if key[0] == "batch" else "passage.cells_harvested"
        assert any(change.startswith(where + ":") for change in check.changes), check.changes
        assert "changed: " in check.text and "cells_harvested" in check.text


def test_a_derived_value_changed_by_sql_is_a_changed_record(plant, sites):
    batch = released(plant, sites)
    before = assert_all_valid(batch)
    step = next(s for s in again(batch).steps if s.passage is not None and s.passage.cumulative_pd is not None)
    step_id, code = step.id, step.code
    db.session.execute(sa.update(Passage).where(Passage.step_id == step_id)
                       .values(cumulative_pd=Passage.cumulative_pd + 0.5))
    found = changed(checks(batch))
    affected = {key for key in before if key[0] == "batch" or key[:2] == ("batch_step", str(step_id))}
    assert set(found) == affected
    for key, check in found.items():
        where = f"steps[{code}].derived.cumulative_pd" if key[0] == "batch" else "derived.cumulative_pd"
        assert [c.split(": ")[0] for c in check.changes] == [where], check.changes
    # The batch's certificate no longer matches the record.
    certificate = releases.certificates_for(again(batch))[-1]
    assert not releases.check_certificate(certificate.verification_token).matches


def test_a_result_value_changed_by_sql_is_reported_on_the_result_and_the_batch(plant, sites):
    batch = released(plant, sites)
    before = assert_all_valid(batch)
    result = db.session.scalar(sa.select(QcResult).where(QcResult.batch_id == again(batch).id,
                                                         QcResult.numeric_value.is_not(None)).order_by(QcResult.id))
    result_id = result.id
    db.session.execute(sa.update(QcResult).where(QcResult.id == result_id)
                       .values(numeric_value=result.numeric_value + 1))
    found = changed(checks(batch))
    affected = {key for key in before if key[0] == "batch" or key[:2] == ("qc_result", str(result_id))}
    assert set(found) == affected
    for key, check in found.items():
        paths = [c.split(": ")[0] for c in check.changes]
        if key[0] == "qc_result":
            assert paths == ["numeric"], check.changes
        else:
            assert len(paths) == 1 and paths[0].startswith("results[") and paths[0].endswith(".numeric"), paths
    # The result is no longer verified: its verification does not cover the value it now carries.
    assert qc.result_verification(db.session.get(QcResult, result_id)) is None


def test_a_step_entry_changed_by_sql_after_release_leaves_the_other_steps_valid(plant, sites):
    batch = released(plant, sites)
    before = assert_all_valid(batch)
    step = again(batch).steps[0]
    db.session.execute(sa.update(BatchStep).where(BatchStep.id == step.id).values(observations="edited"))
    found = changed(checks(batch))
    assert set(found) == {key for key in before if key[0] == "batch" or key[:2] == ("batch_step", str(step.id))}
    assert all(k[0] != "qc_result" for k in found)


def test_a_tampered_snapshot_makes_the_signature_invalid(plant, sites):
    batch = released(plant, sites)
    signature = signature_services.signatures_for(again(batch))[0]
    assert signature.signed_content is not None
    # The append-only triggers refuse an UPDATE of a signature: only a copy can carry an edited snapshot.
    copy = Signature(**{c.key: getattr(signature, c.key) for c in sa.inspect(Signature).column_attrs if c.key != "id"})
    copy.signed_content = signature.signed_content.replace(again(batch).number, "XX-0000")
    assert signature_services.check(copy, again(batch)).status == SignatureStatus.INVALID


def test_a_signature_without_snapshot_keeps_the_hash_check(plant, sites):
    batch = released(plant, sites)
    signature = signature_services.signatures_for(again(batch))[0]
    legacy = Signature(**{c.key: getattr(signature, c.key) for c in sa.inspect(Signature).column_attrs
                          if c.key not in ("id", "signed_content")})
    # Made before snapshots: hashed without the values added with them.
    content = signature_services._without_added(again(batch).signature_content())
    legacy.content_hash = signature_services._hash(signature_services.audit.canonical_json(content))
    legacy.seal = signature_services._seal(legacy)
    assert signature_services.check(legacy, again(batch)).status == SignatureStatus.VALID
    db.session.execute(sa.update(BatchStep).where(BatchStep.id == again(batch).steps[0].id).values(observations="x"))
    db.session.expire_all()
    assert signature_services.check(legacy, again(batch)).status == CHANGED


def test_demo_style_complete_qc_helper_still_verifies_pending_results(plant, sites):
    """A pending result's verification covers it until its final read; then only a new verification does."""
    batch = batch_services.start_batch(again(plant.tech), sites["BG"],
                                       start_command(sites["BG"], "UCMSC", [plant.material_din],
                                                     started_at=batch_start()))
    run_batch_to_awaiting_qc(plant, batch)
    lifecycle.transition(again(plant.tech), again(batch), S.AWAITING_QC, reason="manufacturing done")
    complete_qc(plant, batch, pending=("STER",))
    [pending] = qc.pending_tests(again(batch))
    result = again(pending.reportable)
    assert qc.result_verification(result) is not None
    qc.record_final_read(again(plant.qc), result, RecordFinalRead.parse({"value": "no growth"}))
    result = again(result)
    assert qc.result_verification(result) is None
    [signature] = signature_services.signatures_for(result)[-1:]
    assert signature_services.check(signature, result).status == SignatureStatus.VALID


def test_the_page_and_the_pdf_show_what_changed_next_to_the_signature(client, plant, sites):
    from tests.conftest import pdf_text
    from tests.test_release_pages import sign_in, text_of

    batch = released(plant, sites)
    number = batch.number
    step = next(s for s in again(batch).steps if s.passage is not None)
    code, step_id = step.code, step.id
    db.session.execute(sa.update(Passage).where(Passage.step_id == step_id)
                       .values(cells_harvested=Passage.cells_harvested + 1000))
    sign_in(client, again(plant.reviewer))
    db.session.expire_all()
    page = text_of(client.get(f"/batches/{number}"))
    assert "no longer holds" in page and "changed: passage.cells_harvested" in page
    text = "".join(pdf_text(client.get(f"/releases/{number}/record.pdf").data).split())
    assert f"changed:steps[{code}].passage.cells_harvested" in text
    assert "re-signrequired" in text
    # The step's own verification is checked in the PDF too, not printed as merely recorded.
    assert "changed:passage.cells_harvested" in text
    assert "Verificationrecorded" not in text and "Verificationvalid" in text


def test_a_review_that_no_longer_holds_blocks_certification_and_the_pages_offer_the_follow_up(client, plant, sites):
    from cellfactory.batches.models import StepStatus
    from cellfactory.core.errors import DomainError
    from tests.test_release_pages import sign_in, text_of

    batch = awaiting_certification(plant, sites, pending=())
    number, batch_id = batch.number, batch.id
    step = next(s for s in again(batch).steps if s.status == StepStatus.DONE)
    step_id = step.id
    db.session.execute(sa.update(BatchStep).where(BatchStep.id == step_id).values(observations="edited behind"))
    db.session.commit()  # as someone with the database would; a refused service call rolls back only its own work
    [review] = [d for d in releases.decisions_for(again(batch)) if d.signature.meaning == Meaning.REVIEWED.value]
    review_signature_id = review.signature_id
    # The Qualified Person cannot certify a record whose review no longer covers it.
    with pytest.raises(DomainError, match="QA review signed by .* no longer holds"):
        certify_by_service(plant, batch, S.RELEASED)
    assert status_of(batch) == S.AWAITING_CERTIFICATION
    blockers = releases.signing_blockers(again(batch), Meaning.QP_CERTIFIED)
    assert "return the batch to QA review" in blockers[0]
    assert any("not verified by a second person" in b for b in blockers[1:])  # the edited step, too
    # The batch page offers the Qualified Person the way back to QA review, and a deviation opened from the change.
    sign_in(client, again(plant.qp))
    page = text_of(client.get(f"/batches/{number}"))
    assert "Return to QA review" in page and "#move-awaiting_qa_review" in page
    assert f"/deviations/new?batch={number}&amp;signature={review_signature_id}" in page
    form = text_of(client.get(f"/deviations/new?batch={number}&signature={review_signature_id}"))
    assert "Signed record changed after signing: Reviewed" in form
    assert "observations" in form and "edited behind" in form
    # A signature of another batch does not fill the form (nor tell what changed there).
    other = text_of(client.get(f"/deviations/new?batch={number}&signature=999999"))
    assert "Signed record changed" not in other
    # The process: back to QA review, reviewed anew, then certified; the new review holds.
    lifecycle.transition(again(plant.qp), again(batch), S.AWAITING_QA_REVIEW, reason="review no longer holds")
    with pytest.raises(DomainError, match="not verified by a second person"):
        review_by_service(plant, batch)  # the changed step's verification no longer holds either
    lifecycle.transition(again(plant.reviewer), again(batch), S.IN_PROCESS, reason="step to verify anew")
    batch_services.verify_step(again(plant.tech2), db.session.get(BatchStep, step_id), signer=signing(plant.tech2))
    lifecycle.transition(again(plant.tech), again(batch), S.AWAITING_QC, reason="verified anew")
    lifecycle.transition(again(plant.qc), again(batch), S.AWAITING_QA_REVIEW, reason="QC unchanged")
    review_by_service(plant, batch)
    certify_by_service(plant, batch, S.RELEASED)
    assert db.session.get(Batch, batch_id).status == S.RELEASED
    reviews = [d for d in releases.decisions_for(again(batch)) if d.signature.meaning == Meaning.REVIEWED.value]
    assert len(reviews) == 2
    assert signature_services.check(reviews[-1].signature, again(batch)).status == SignatureStatus.VALID
    assert signature_services.check(reviews[0].signature, again(batch)).status == CHANGED


def test_a_step_verification_that_no_longer_holds_offers_a_new_verification_and_a_deviation(client, plant, sites):
    from tests.test_release_pages import sign_in, text_of

    batch = batch_services.start_batch(again(plant.tech), sites["BG"],
                                       start_command(sites["BG"], "UCMSC", [plant.material_din],
                                                     started_at=batch_start()))
    run_batch_to_awaiting_qc(plant, batch)
    step = next(s for s in again(batch).steps if signature_services.signatures_for(s))
    signature_id = signature_services.signatures_for(step)[-1].id
    db.session.execute(sa.update(BatchStep).where(BatchStep.id == step.id).values(observations="edited behind"))
    db.session.expire_all()
    found = lifecycle.signature_follow_up(again(batch), db.session.get(Signature, signature_id),
                                               signature_services.check(db.session.get(Signature, signature_id),
                                                                        again(step)).text)
    assert found is not None and found.verify_again and "deviation" in found.text
    sign_in(client, again(plant.qc))  # site staff, not the one who entered the step
    page = text_of(client.get(f"/batches/{batch.number}"))
    assert "no longer holds" in page and "A second person verifies the entries as they are now" in page
    assert f"signature={signature_id}" in page


# --- the progression rules, on plain content -----------------------------------------------------------------------


def test_progression_rules_on_plain_content():
    changes = signature_services.content_changes
    pending = {"test": "STER", "numeric": None, "qualitative": None, "verdict": "pending", "raw_data": "LIMS/1",
               "analyst_id": 1, "sample_id": "S-1", "invalidated": None}
    read = pending | {"qualitative": "no growth", "verdict": "pass", "raw_data": "LIMS/2", "analyst_id": 2}
    signed = {"number": "B-1", "results": [pending], "deviations": [{"number": "D-1", "classification": "minor",
                                                                     "status": "open"}]}
    later = {"number": "B-1", "results": [read, read | {"test": "VIAB"}],
             "deviations": [{"number": "D-1", "classification": "minor", "status": "closed"}]}
    assert changes(signed, later) == []  # final read, a new result, a deviation closed: progress, not change
    # What the signer attested, changed: named by path.
    assert changes(signed, later | {"number": "B-2"}) == ["number: B-1 → B-2"]
    assert changes(signed, {**later, "results": [read | {"sample_id": "S-2"}]}) == \
        ["results[1 STER].sample_id: S-1 → S-2"]
    assert changes(signed, {**later, "results": [read | {"invalidated": "lab error"}]}) == \
        ["results[1 STER].invalidated: — → lab error"]
    assert changes(signed, {**later, "deviations": [{"number": "D-1", "classification": "major", "status": "open"}]}) \
        == ["deviations[D-1].classification: minor → major"]
    assert changes(signed, {**later, "results": []}) == ["results[1 STER]: removed"]
    assert changes(signed, later | {"extra": "x"}) == ["extra: added x"]
    assert changes(signed, later | {"extra": None}) == []
    # A result read when signed may not change its value afterwards.
    assert changes({"results": [read]}, {"results": [read | {"qualitative": "growth", "verdict": "fail"}]}) == \
        ["results[1 STER].qualitative: no growth → growth", "results[1 STER].verdict: pass → fail"]


@pytest.mark.parametrize("signature", ["99999999999999999999999", "-1", "0", "abc", "1\x00"])
def test_a_deviation_form_opened_from_an_impossible_signature_number_starts_empty(client, plant, sites, signature):
    from tests.test_release_pages import sign_in, text_of

    batch = released(plant, sites)
    sign_in(client, again(plant.qa))
    response = client.get("/deviations/new", query_string={"batch": batch.number, "signature": signature})
    # The form, empty; or, for text no query may hold (NUL), the page's refusal of the query.
    assert response.status_code == (422 if "\x00" in signature else 200)
    assert "Signed record changed" not in text_of(response)

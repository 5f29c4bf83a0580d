"""Signing in bulk (issue 16): a second analyst verifies a list of results, a second person a list of steps, QA
acknowledges several notices, each with one signature ceremony. The signer authenticates once (a wrong password
counts once towards lock-out); each record gets its own signature with its meaning and the hash of its own
content, and its own audit entry; if any record is refused, nothing is signed and the refusal names each refused
record. A record listed twice is refused (not collapsed): the signer signs exactly the list shown."""

from __future__ import annotations

import hashlib
import html
import json

import pytest
import sqlalchemy as sa

from cellfactory.audit.models import AuditEntry
from cellfactory.auth.models import Role, User
from cellfactory.batches import services as batch_services
from cellfactory.batches.commands import StepSelection, VerifySteps
from cellfactory.batches.models import BatchStatus, BatchStep
from cellfactory.core.errors import AuthenticationFailed, Conflict, PermissionDenied, ValidationFailed
from cellfactory.extensions import db
from cellfactory.lifecycle import services as lifecycle
from cellfactory.notifications import services as notifications
from cellfactory.notifications.commands import AcknowledgeTasks
from cellfactory.notifications.models import NotificationTask, TaskAcknowledgement
from cellfactory.qc import services as qc
from cellfactory.qc.commands import EnterResult, ResultSelection, VerifyResults
from cellfactory.signatures import services as signatures
from cellfactory.signatures.commands import Signer
from cellfactory.signatures.models import Signature
from cellfactory.sites.models import Site
from tests.batch_helpers import (
    batch_start,
    build_plant,
    iso,
    passage_data,
    run_batch_to_awaiting_qc,
    signing,
    start_command,
    started_long_ago,
    step_command,
    step_data,
)
from tests.conftest import PASSWORD, login, make_user, refetch
from tests.post_release_helpers import conditional_with_units, fail_sterility
from tests.test_api import assert_error, bearer, new_token

API = "/api/v1"
S = BatchStatus
VERIFIED = "Verified"
QA_ACK = "Notice of a failure after release acknowledged (QA of the site)"


def text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def by_name(username: str) -> User:
    return db.session.scalar(sa.select(User).where(User.username == username))


def signatures_on(entity_type: str, ids) -> list[Signature]:
    return list(db.session.scalars(sa.select(Signature).where(
        Signature.entity_type == entity_type, Signature.entity_id.in_([str(i) for i in ids])).order_by(Signature.id)))


def sha256_of(content: dict) -> str:
    """The content hash as Part 11 §11.70 asks for it, computed here: SHA-256 of the record's content written as
    canonical JSON (sorted keys, no spaces, times in ISO 8601)."""
    def plain(value):
        return value.isoformat() if hasattr(value, "isoformat") else str(value)
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=plain)
    return hashlib.sha256(canonical.encode()).hexdigest()


def audited(signature: Signature) -> list[AuditEntry]:
    return list(db.session.scalars(sa.select(AuditEntry).where(AuditEntry.entity_type == "signature",
                                                               AuditEntry.entity_id == str(signature.id))))


@pytest.fixture
def plant(users, sites):
    return build_plant(users, sites)


# --- QC results ---------------------------------------------------------------------------------------------------


@pytest.fixture
def batch(plant, sites):
    batch = batch_services.start_batch(plant.tech, sites["BG"],
                                       start_command(sites["BG"], "UCMSC", [plant.material_din],
                                                     started_at=batch_start()))
    run_batch_to_awaiting_qc(plant, batch)
    started_long_ago(batch)
    return lifecycle.transition(refetch(plant.tech), refetch(batch), S.AWAITING_QC, reason="done")


def enter(analyst, batch, test, value, **extra):
    data = {"test": test, "sample_id": f"S-{test}", "sampled_at": iso(1), "value": value, **extra}
    return qc.enter_result(refetch(analyst), refetch(batch), EnterResult.parse(data))


@pytest.fixture
def results(plant, batch):
    """Three results entered by the first analyst, waiting for a second one."""
    return [enter(plant.qc, batch, "VIAB", "92.5"), enter(plant.qc, batch, "CD73", "98.1"),
            enter(plant.qc, batch, "STER", "no growth")]


def test_n_results_get_n_signatures_each_on_its_own_content(plant, results):
    made = qc.verify_results(refetch(plant.qc2), [refetch(r) for r in results], signer=signing(plant.qc2))
    assert len(made) == 3
    for result in results:
        result = refetch(result)
        [signature] = signatures_on("qc_result", [result.id])
        assert (signature.meaning, signature.signer_username, signature.printed_name) == (
            VERIFIED, "qc.two.bg", "Qc.Two.Bg Tester")
        assert signature.content_hash == sha256_of(result.signature_content())
        assert signatures.verify(signature, result) == signatures.SignatureStatus.VALID
        assert qc.result_verification(result).id == signature.id
        assert [e.action for e in audited(signature)] == ["create"]
    hashes = {s.content_hash for s in signatures_on("qc_result", [r.id for r in results])}
    assert len(hashes) == 3  # each its own content
    # A signature belongs to its own record: checked against another result it does not hold.
    first, second = (refetch(r) for r in results[:2])
    assert signatures.verify(signatures_on("qc_result", [first.id])[0], second) == signatures.SignatureStatus.INVALID
    batch = batch_services.get_batch(refetch(plant.qc2), _number(results[0]))
    assert not [item for item in qc.qc_blockers(batch) if "not verified" in item]
    assert by_name("qc.two.bg").failed_login_count == 0


def _number(result) -> str:
    from cellfactory.batches.models import Batch

    return db.session.get(Batch, refetch(result).batch_id).number


def test_a_wrong_password_counts_once_and_signs_nothing(plant, results):
    with pytest.raises(AuthenticationFailed):
        qc.verify_results(refetch(plant.qc2), [refetch(r) for r in results],
                          signer=signing(plant.qc2, "not my password"))
    assert by_name("qc.two.bg").failed_login_count == 1
    assert signatures_on("qc_result", [r.id for r in results]) == []


def test_a_result_entered_by_the_signer_is_refused_by_name_and_nothing_is_signed(plant, batch, results):
    own = enter(plant.qc2, batch, "VIAB", "91", retest_of=results[0].id, retest_reason="sample re-read")
    listed = [refetch(r) for r in results] + [refetch(own)]
    with pytest.raises(Conflict) as refused:
        qc.verify_results(refetch(plant.qc2), listed, signer=signing(plant.qc2))
    assert refused.value.fields == {
        "results[3]": f"Result #{own.id} (VIAB, batch {_number(own)}): You entered this result: a second analyst "
                      "must verify it."}
    assert refused.value.message.startswith("Nothing was signed: 1 of the 4 results cannot be signed.")
    assert signatures_on("qc_result", [r.id for r in listed]) == []
    assert by_name("qc.two.bg").failed_login_count == 0  # refused before the password was asked


def test_every_refused_result_is_named(plant, batch, results):
    qc.verify_result(refetch(plant.qc2), refetch(results[1]), signer=signing(plant.qc2))
    own = enter(plant.qc2, batch, "STER", "no growth", retest_of=results[2].id, retest_reason="second sample")
    listed = [refetch(r) for r in [*results, own]]
    with pytest.raises(Conflict) as refused:
        qc.verify_results(refetch(plant.qc2), listed, signer=signing(plant.qc2))
    assert refused.value.fields == {
        "results[1]": f"Result #{results[1].id} (CD73, batch {_number(own)}): This result is already verified.",
        "results[3]": f"Result #{own.id} (STER, batch {_number(own)}): You entered this result: a second analyst "
                      "must verify it."}
    assert refused.value.message.startswith("Nothing was signed: 2 of the 4 results cannot be signed.")
    assert len(signatures_on("qc_result", [r.id for r in listed])) == 1  # the one verified before


def test_an_empty_list_and_duplicates_are_refused(plant, results):
    with pytest.raises(ValidationFailed) as empty:
        qc.verify_results(refetch(plant.qc2), [], signer=signing(plant.qc2))
    assert empty.value.fields == {"results": "Choose at least one."}
    with pytest.raises(ValidationFailed) as twice:
        qc.verify_results(refetch(plant.qc2), [refetch(results[0]), refetch(results[0])], signer=signing(plant.qc2))
    assert twice.value.fields == {"results": "List each result once."}
    with pytest.raises(ValidationFailed) as listed:
        ResultSelection.parse({"results": [results[0].id, results[1].id, results[0].id]})
    assert listed.value.fields == {"results": f"Listed more than once: {results[0].id}. List each record once."}
    with pytest.raises(ValidationFailed) as nothing:
        ResultSelection.parse({"results": []})
    assert nothing.value.fields == {"results": "Choose at least one."}
    assert signatures_on("qc_result", [r.id for r in results]) == []


def test_results_of_another_site_are_refused(plant, results, users):
    qc_mz = make_user("qc.mz", [(Role.QC_ANALYST, "MZ")], signing=True)
    ids = [r.id for r in results]
    with pytest.raises(ValidationFailed) as unseen:
        qc.results_to_verify(qc_mz, ids)
    assert unseen.value.fields == {"results": f"There is no result you can see with the id {', '.join(map(str, ids))}."}
    # Handed the records all the same, the service refuses each by name: only an analyst of the batch's site.
    with pytest.raises(PermissionDenied) as refused:
        qc.verify_results(refetch(qc_mz), [refetch(r) for r in results], signer=signing(qc_mz))
    assert sorted(refused.value.fields) == ["results[0]", "results[1]", "results[2]"]
    assert all("Only a QC analyst of the batch's site" in m for m in refused.value.fields.values())
    assert signatures_on("qc_result", ids) == []


# --- steps --------------------------------------------------------------------------------------------------------


@pytest.fixture
def recorded(plant, sites):
    """A batch in process whose steps the first technician recorded, none verified yet."""
    batch = batch_services.start_batch(plant.tech, sites["BG"],
                                       start_command(sites["BG"], "UCMSC", [plant.material_din],
                                                     started_at=batch_start()))
    counts = [(0, 1e6, 8e6, 190, 120), (1, 1e6, 8e6, 120, 48), (2, 1e6, 4e6, 48, 2)]
    for step in refetch(batch).steps:
        step = refetch(step)
        if step.kind.value == "passage":
            number, seeded, harvested, start, end = counts.pop(0)
            entries = passage_data(number, seeded, harvested, start, end)
        else:
            hours = 199 if step.code == "ISO" else 2
            entries = step_data(started_at=iso(hours + 1), ended_at=iso(hours))
        batch_services.record_step(refetch(plant.tech), step, step_command(step, entries))
    return refetch(batch)


def test_n_steps_get_n_signatures_each_on_its_own_entries(plant, recorded):
    steps = batch_services.steps_to_verify(recorded, ["p0", "P1", "HARV"])
    assert [s.code for s in steps] == ["P0", "P1", "HARV"]
    batch_services.verify_steps(refetch(plant.tech2), steps, signer=signing(plant.tech2))
    for code in ("P0", "P1", "HARV"):
        step = db.session.scalar(sa.select(BatchStep).where(BatchStep.batch_id == recorded.id, BatchStep.code == code))
        [signature] = signatures_on("batch_step", [step.id])
        assert (signature.meaning, signature.signer_username) == (VERIFIED, "technician2.bg")
        assert signature.content_hash == sha256_of(step.signature_content())
        assert batch_services.step_verification(step).id == signature.id
        assert len(audited(signature)) == 1
    others = db.session.scalars(sa.select(BatchStep).where(BatchStep.batch_id == recorded.id,
                                                          BatchStep.code.in_(["ISO", "P2"])))
    assert all(batch_services.step_verification(s) is None for s in others)


def test_a_step_entered_by_the_signer_is_refused_and_nothing_is_signed(plant, recorded):
    steps = batch_services.steps_to_verify(recorded, ["ISO", "P0"])
    with pytest.raises(Conflict) as refused:
        batch_services.verify_steps(refetch(plant.tech), steps, signer=signing(plant.tech))
    assert refused.value.fields == {
        f"steps[{i}]": f"Step {code} ({name}) of batch {recorded.number}: You entered or changed this step: a second "
                       "person must verify it." for i, (code, name) in enumerate([("ISO", "Isolation (explant)"),
                                                                                  ("P0", "Seeding P0")])}
    assert signatures_on("batch_step", [s.id for s in steps]) == []


def test_a_wrong_password_for_steps_counts_once(plant, recorded):
    steps = batch_services.steps_to_verify(recorded, ["ISO", "P0", "P1", "P2", "HARV"])
    with pytest.raises(AuthenticationFailed):
        batch_services.verify_steps(refetch(plant.tech2), steps, signer=signing(plant.tech2, "x"))
    assert by_name("technician2.bg").failed_login_count == 1
    assert signatures_on("batch_step", [s.id for s in steps]) == []


def test_unknown_and_repeated_step_codes_are_refused(plant, recorded):
    with pytest.raises(ValidationFailed) as unknown:
        batch_services.steps_to_verify(recorded, ["P1", "P9"])
    assert unknown.value.fields == {"steps": f"Batch {recorded.number} has no step P9."}
    with pytest.raises(ValidationFailed) as twice:
        StepSelection.parse({"steps": ["P1", "p1"]})
    assert twice.value.fields == {"steps": "Listed more than once: p1. List each record once."}
    step = refetch(recorded).steps[1]
    with pytest.raises(ValidationFailed):
        batch_services.verify_steps(refetch(plant.tech2), [step, step], signer=signing(plant.tech2))
    assert signatures_on("batch_step", [step.id]) == []


@pytest.mark.parametrize("hostile", ["P1\x00", "P\ud8001", "P" * 10_000, "\u202eP1", ["P1", 7], "P1"])
def test_hostile_selections_are_refused_with_a_field_error(hostile):
    data = {"steps": hostile, "password": PASSWORD}
    with pytest.raises(ValidationFailed) as refused:
        VerifySteps.parse(data)
    assert list(refused.value.fields) == ["steps"]


@pytest.mark.parametrize("hostile", [["1"], [True], [1.5], [2**63], "1", None, [{"id": 1}]])
def test_ids_must_be_whole_numbers(hostile):
    with pytest.raises(ValidationFailed) as refused:
        VerifyResults.parse({"results": hostile, "password": PASSWORD})
    assert list(refused.value.fields) == ["results"]


# --- notices after a failure after release ------------------------------------------------------------------------


@pytest.fixture
def failed(users, sites):
    setup = conditional_with_units(users, sites)
    fail_sterility(setup["plant"], setup["batch"])
    tasks = list(db.session.scalars(sa.select(NotificationTask).order_by(NotificationTask.id)))
    codes = {s.id: s.code for s in db.session.scalars(sa.select(Site))}
    assert sorted(codes[t.site_id] for t in tasks) == ["BG", "MZ"]
    return {"plant": setup["plant"], "tasks": [t.id for t in tasks],
            "qa_both": make_user("qa.both", [(Role.QA, "BG"), (Role.QA, "MZ")], signing=True)}


def acknowledge(command_data, user, ids):
    command = AcknowledgeTasks.parse({"tasks": ids, "password": PASSWORD, **command_data})
    return notifications.acknowledge_many(refetch(user), notifications.tasks_to_acknowledge(refetch(user), ids),
                                          command, Signer(username=user.username, password=PASSWORD))


def test_qa_acknowledges_several_notices_each_with_its_own_signature(failed):
    ids = failed["tasks"]
    made = acknowledge({"comment": "units located and segregated"}, failed["qa_both"], ids)
    assert [a.task_id for a in made] == ids
    for task_id in ids:
        task = db.session.get(NotificationTask, task_id)
        ack = task.acknowledgement(notifications.Capacity.QA)
        assert ack.signature.meaning == QA_ACK and ack.signature.signer_username == "qa.both"
        assert ack.signature.comment == "units located and segregated"
        assert ack.signature.content_hash == sha256_of(task.signature_content())
        assert signatures.verify(ack.signature, task) == signatures.SignatureStatus.VALID
        assert task.completed_at is None  # the physician's contact has still to sign
    assert len({a.signature_id for a in made}) == 2


def test_a_notice_already_acknowledged_is_refused_and_nothing_is_signed(failed):
    ids = failed["tasks"]
    acknowledge({"comment": "first"}, failed["qa_both"], ids[1:])
    with pytest.raises(Conflict) as refused:
        acknowledge({"comment": "again"}, failed["qa_both"], ids)
    [(field, message)] = refused.value.fields.items()
    assert field == "tasks[1]" and f"Notice #{ids[1]} to " in message and "already acknowledged" in message
    assert db.session.scalar(sa.select(sa.func.count()).select_from(TaskAcknowledgement)) == 1


def test_a_notice_of_another_site_is_refused(failed, users):
    qa_bg = refetch(users["qa"])  # QA at BG only
    with pytest.raises(ValidationFailed) as unseen:
        notifications.tasks_to_acknowledge(qa_bg, failed["tasks"])
    assert unseen.value.fields == {"tasks": f"There is no notice of your sites with the id {failed['tasks'][1]}."}
    tasks = [db.session.get(NotificationTask, i) for i in failed["tasks"]]
    with pytest.raises(PermissionDenied) as refused:
        notifications.acknowledge_many(qa_bg, tasks, AcknowledgeTasks.parse(
            {"tasks": failed["tasks"], "comment": "x", "password": PASSWORD}),
            Signer(username=qa_bg.username, password=PASSWORD))
    assert list(refused.value.fields) == ["tasks[1]"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(TaskAcknowledgement)) == 0


def test_acknowledging_several_needs_what_was_done(failed):
    with pytest.raises(ValidationFailed) as refused:
        AcknowledgeTasks.parse({"tasks": failed["tasks"], "comment": "\u202e", "password": PASSWORD})
    assert list(refused.value.fields) == ["comment"]
    with pytest.raises(ValidationFailed) as blank:
        AcknowledgeTasks.parse({"tasks": failed["tasks"], "comment": "   ", "password": PASSWORD})
    assert list(blank.value.fields) == ["comment"]


# --- the pages ----------------------------------------------------------------------------------------------------


def test_the_worklist_lists_results_to_tick_and_the_confirmation_lists_each(client, plant, results):
    login(client, "qc.two.bg")
    page = text(client.get("/qc/"))
    for result in results:
        assert f'name="result" value="{result.id}"' in page
    assert "Verify selected" in page
    query = "&".join(f"result={r.id}" for r in results)
    confirm = client.get(f"/qc/results/verify?{query}")
    assert confirm.status_code == 200
    page = text(confirm)
    for result, value in zip(results, ["92.5 %", "98.1 %", "no growth"], strict=True):
        assert f"#{result.id} · {_number(result)}" in page and value in page
        assert f'<input type="hidden" name="result" value="{result.id}">' in page
    assert "You sign 3 results" in page and "Verified" in page and 'name="password"' in page
    assert "I checked each result listed above against its raw data" in page


def _sign_data(ids, field, username, password=PASSWORD, **extra):
    return {field: [str(i) for i in ids], "meaning": "VERIFIED", "username": username, "password": password, **extra}


def test_verifying_results_through_the_page(client, plant, results):
    login(client, "qc.two.bg")
    ids = [r.id for r in results]
    wrong = client.post("/qc/results/verify", data=_sign_data(ids, "result", "qc.two.bg", "wrong password"))
    assert wrong.status_code == 401
    assert "Password is incorrect." in text(wrong) and 'id="error-summary"' in text(wrong)
    assert signatures_on("qc_result", ids) == [] and by_name("qc.two.bg").failed_login_count == 1
    done = client.post("/qc/results/verify", data=_sign_data(ids, "result", "qc.two.bg", back=_number(results[0])))
    assert done.status_code == 302 and done.headers["Location"].endswith(f"/qc/batches/{_number(results[0])}")
    assert [s.meaning for s in signatures_on("qc_result", ids)] == [VERIFIED] * 3
    assert by_name("qc.two.bg").failed_login_count == 0


def test_a_refused_result_is_named_at_the_top_of_the_page(client, plant, batch, results):
    own = enter(plant.qc2, batch, "CD73", "97", retest_of=results[1].id, retest_reason="repeat")
    login(client, "qc.two.bg")
    ids = [results[0].id, own.id]
    response = client.post("/qc/results/verify", data=_sign_data(ids, "result", "qc.two.bg"))
    assert response.status_code == 409
    page = text(response)
    summary = page.split('id="error-summary"', 1)[1].split("</div>", 1)[0]
    assert "Nothing was signed" in summary
    assert f"Result #{own.id} (CD73, batch {_number(own)}): You entered this result" in summary
    assert f"result={results[0].id}" in page  # continue without the refused one
    assert signatures_on("qc_result", ids) == []


def test_the_confirmation_names_what_cannot_be_signed_before_the_password_is_asked(client, plant, batch, results):
    own = enter(plant.qc2, batch, "CD73", "97", retest_of=results[1].id, retest_reason="repeat")
    login(client, "qc.two.bg")
    response = client.get(f"/qc/results/verify?result={results[0].id}&result={own.id}")
    assert response.status_code == 200
    page = text(response)
    summary = page.split('id="error-summary"', 1)[1].split("</div>", 1)[0]
    assert "Some records cannot be signed as listed" in summary
    assert f"Result #{own.id} (CD73, batch {_number(own)}): You entered this result" in summary
    assert f"Result #{results[0].id} " not in summary
    assert f"/qc/results/verify?result={results[0].id}" in page
    assert by_name("qc.two.bg").failed_login_count == 0 and signatures_on("qc_result", [own.id]) == []


def test_the_confirmation_refuses_an_empty_or_unknown_selection(client, plant, results):
    login(client, "qc.two.bg")
    empty = client.get("/qc/results/verify")
    assert empty.status_code == 422 and "The results cannot be verified: Choose at least one." in text(empty)
    unknown = client.get("/qc/results/verify?result=999999&result=abc")
    assert unknown.status_code == 422 and "Each id is a whole number." in text(unknown)
    unknown = client.get("/qc/results/verify?result=999999")
    assert unknown.status_code == 422 and "There is no result you can see with the id 999999." in text(unknown)
    assert 'name="password"' not in text(unknown)


def test_the_batch_qc_page_offers_the_results_to_tick(client, plant, results):
    login(client, "qc.two.bg")
    page = text(client.get(f"/qc/batches/{_number(results[0])}"))
    section = page.split('id="verify-selected"', 1)[1].split("</section>", 1)[0]
    assert all(f'value="{r.id}"' in section for r in results)
    assert f'name="back" value="{_number(results[0])}"' in section
    client.post("/auth/logout")
    login(client, "qc.one.bg")  # who entered them has nothing to tick
    assert 'id="verify-selected"' not in text(client.get(f"/qc/batches/{_number(results[0])}"))


def test_verifying_steps_through_the_batch_page(client, plant, recorded):
    login(client, "technician2.bg")
    page = text(client.get(f"/batches/{recorded.number}"))
    section = page.split('id="verify-selected"', 1)[1].split("</section>", 1)[0]
    assert all(f'name="step" value="{code}"' in section for code in ["ISO", "P0", "P1", "P2", "HARV"])
    confirm = text(client.get(f"/batches/{recorded.number}/verify-steps?step=P0&step=P1"))
    assert "P0 · " + recorded.number in confirm and "1,000,000 cells seeded, 8,000,000 harvested" in confirm
    assert "You sign 2 steps" in confirm
    done = client.post(f"/batches/{recorded.number}/verify-steps",
                       data=_sign_data(["P0", "P1"], "step", "technician2.bg"))
    assert done.status_code == 302, text(done)
    steps = batch_services.steps_to_verify(refetch(recorded), ["P0", "P1"])
    assert [len(signatures_on("batch_step", [s.id])) for s in steps] == [1, 1]
    client.post("/auth/logout")
    login(client, "technician.bg")  # who entered every step has nothing to tick
    assert 'id="verify-selected"' not in text(client.get(f"/batches/{recorded.number}"))
    foreseen = text(client.get(f"/batches/{recorded.number}/verify-steps?step=ISO"))
    assert f"Step ISO (Isolation (explant)) of batch {recorded.number}: You entered or changed this step" in foreseen
    refused = client.post(f"/batches/{recorded.number}/verify-steps",
                          data=_sign_data(["ISO"], "step", "technician.bg"))
    assert refused.status_code == 409 and "You entered or changed this step" in text(refused)


def test_acknowledging_several_notices_through_the_page(client, failed):
    login(client, "qa.both")
    page = text(client.get("/alerts/tasks"))
    section = page.split('id="acknowledge-selected"', 1)[1].split("</section>", 1)[0]
    assert all(f'name="task" value="{i}"' in section for i in failed["tasks"])
    ids = failed["tasks"]
    data = {"task": [str(i) for i in ids], "meaning": "FAILURE_NOTICE_ACKNOWLEDGED", "username": "qa.both",
            "password": PASSWORD}
    query = "&".join(f"task={i}" for i in ids)
    confirm = text(client.get(f"/alerts/tasks/acknowledge?{query}"))
    assert "You sign 2 notices" in confirm and "Some records cannot be signed" not in confirm
    assert all(f"Notice #{i} · " in confirm for i in ids) and 'name="comment"' in confirm
    missing = client.post("/alerts/tasks/acknowledge", data={**data, "comment": ""})
    assert missing.status_code == 422 and "Say what you did" in text(missing)
    done = client.post("/alerts/tasks/acknowledge", data={**data, "comment": "units segregated"})
    assert done.status_code == 302, text(done)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(TaskAcknowledgement)) == 2


# --- the API ------------------------------------------------------------------------------------------------------


def test_verifying_results_through_the_api(client, plant, batch, results):
    token = new_token(refetch(plant.qc2))
    ids = [r.id for r in results]
    assert_error(client.post(f"{API}/results/verification", headers=bearer(token),
                             json={"results": ids + [999_999], "password": PASSWORD}), 422, "invalid", "results")
    # An id beyond what an id column holds (PostgreSQL's integer) names no result: refused, not a server error.
    assert_error(client.post(f"{API}/results/verification", headers=bearer(token),
                             json={"results": [2**63 - 2], "password": PASSWORD}), 422, "invalid", "results")
    assert_error(client.post(f"{API}/results/verification", headers=bearer(token),
                             json={"results": [ids[0], ids[0]], "password": PASSWORD}), 422, "invalid", "results")
    assert_error(client.post(f"{API}/results/verification", headers=bearer(token),
                             json={"results": [], "password": PASSWORD}), 422, "invalid", "results")
    assert_error(client.post(f"{API}/results/verification", headers=bearer(token),
                             json={"results": ids, "password": "wrong"}), 401, "unauthenticated")
    assert by_name("qc.two.bg").failed_login_count == 1
    own = enter(plant.qc2, batch, "VIAB", "90", retest_of=ids[0], retest_reason="repeat").id
    error = assert_error(client.post(f"{API}/results/verification", headers=bearer(token),
                                     json={"results": [*ids, own], "password": PASSWORD}), 409, "conflict")
    assert list(error["fields"]) == ["results[3]"] and f"Result #{own} (VIAB" in error["fields"]["results[3]"]
    assert signatures_on("qc_result", [*ids, own]) == []
    response = client.post(f"{API}/results/verification", headers=bearer(token),
                           json={"results": ids, "password": PASSWORD, "meaning": "verified"})
    assert response.status_code == 200, response.get_json()
    items = response.get_json()["items"]
    assert [i["id"] for i in items] == ids and all(i["verified"] for i in items)
    assert {i["verification"]["meaning"] for i in items} == {VERIFIED}
    assert by_name("qc.two.bg").failed_login_count == 0


def test_verifying_steps_through_the_api(client, plant, recorded):
    token = new_token(refetch(plant.tech2))
    url = f"{API}/batches/{recorded.number}/step-verifications"
    assert_error(client.post(url, headers=bearer(token), json={"steps": ["P1", "NOPE"], "password": PASSWORD}),
                 422, "invalid", "steps")
    assert_error(client.post(url, headers=bearer(token), json={"steps": ["P1\u0000"], "password": PASSWORD}),
                 422, "invalid", "steps")
    response = client.post(url, headers=bearer(token), json={"steps": ["ISO", "p0"], "password": PASSWORD})
    assert response.status_code == 200, response.get_json()
    assert [(s["code"], s["verified"]) for s in response.get_json()["items"]] == [("ISO", True), ("P0", True)]
    again = assert_error(client.post(url, headers=bearer(token), json={"steps": ["P0", "P1"], "password": PASSWORD}),
                         409, "conflict")
    assert list(again["fields"]) == ["steps[0]"]


def test_acknowledging_several_notices_through_the_api(client, failed, users):
    token = new_token(refetch(failed["qa_both"]))
    url = f"{API}/notification-tasks/acknowledgements"
    assert_error(client.post(url, headers=bearer(token), json={"tasks": failed["tasks"], "comment": "done"}),
                 422, "invalid", "password")
    response = client.post(url, headers=bearer(token),
                           json={"tasks": failed["tasks"], "comment": "done", "password": PASSWORD})
    assert response.status_code == 201, response.get_json()
    items = response.get_json()["items"]
    assert [t["id"] for t in items] == failed["tasks"]
    assert all(t["acknowledgements"][0]["signature"]["status"] == "valid" for t in items)
    bg_token = new_token(refetch(users["qa"]))
    assert_error(client.post(url, headers=bearer(bg_token),
                             json={"tasks": failed["tasks"], "comment": "done", "password": PASSWORD}),
                 422, "invalid", "tasks")


def test_the_bulk_operations_are_documented(client, plant):
    document = client.get(f"{API}/openapi.json", headers=bearer(new_token(refetch(plant.qc2)))).get_json()
    for path, field in [("/results/verification", "results"), ("/batches/{number}/step-verifications", "steps"),
                        ("/notification-tasks/acknowledgements", "tasks")]:
        operation = document["paths"][path]["post"]
        assert {"401", "409", "422"} <= set(operation["responses"])
        reference = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        body = document["components"]["schemas"][reference.rpartition("/")[2]]
        listed = body["properties"][field]
        assert listed["type"] == "array" and listed["uniqueItems"] is True and listed["minItems"] == 1
        assert listed["x-refused-when"]  # unknown ids or codes are refused naming the list
        assert field in body["required"] and "password" in body["properties"]

"""The same refusal at every door for the release decisions, the notification acknowledgements and new users (issue
15): the QA review (signed or returned), the QP decisions, a notification task's acknowledgement and the creation of
a user are each one command (`releases/commands.py`, `notifications/commands.py`, `auth/commands.py`), read by the
page's form and by the API's JSON body. The same bad input gives the same field and message through both, and
nothing is saved: no decision, no signature, no acknowledgement, no user, no audit entry, the batch where it was.

The page and the API name a few fields differently (the page's `reason` is the review API's `comment`, the new-user
page's `temporary_password` and `role` are the API's `password` and `roles`); the tests compare the field each door
names for the same input.
"""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from cellfactory.audit.models import AuditEntry
from cellfactory.auth.commands import EMAIL_MESSAGE, USERNAME_MESSAGE, CreateUser
from cellfactory.auth.models import User
from cellfactory.batches.models import Batch
from cellfactory.core.errors import ValidationFailed
from cellfactory.core.text import BIDI_MESSAGE, CONTROL_MESSAGE, SURROGATE_MESSAGE
from cellfactory.extensions import db
from cellfactory.notifications.commands import AcknowledgeTask
from cellfactory.notifications.models import NotificationTask, TaskAcknowledgement
from cellfactory.releases.commands import QpDecide, ReleaseConditionally, ReturnBatch, ReviewBatch, ReviewDecision
from cellfactory.releases.models import BatchDecision
from cellfactory.signatures.models import Signature
from cellfactory.sites.models import Site
from tests.conftest import PASSWORD, enable_signing, login, refetch
from tests.test_api import bearer, new_token
from tests.test_api_releases import auth, plant  # noqa: F401 - the fixtures
from tests.test_post_release_pages import failed  # noqa: F401 - the fixture
from tests.test_release_pages import awaiting_certification, awaiting_review, signed
from tests.test_source_material_doors import field_error

API = "/api/v1"
LONG = "x" * 10_000
TOO_LONG = "Use at most 2000 characters (this has 10000)."
# Text that is no date or time: the page's field cannot read it and hands it to the command, which refuses it in the
# words the API gives for the same text.
DATE_FORMAT = "Enter the date as YYYY-MM-DD."
BAD_DATES = ["2026-13-45", "31/12/2026"]
NOT_A_TIME = "Not an ISO 8601 date and time: use e.g. 2026-11-22T08:00:00+01:00 or ...Z."
BAD_TIMES = ["2026-13-45T10:00", "31/12/2026 10:00"]


def _saved() -> tuple:
    """Everything a decision, an acknowledgement or a new user writes."""
    def count(model) -> int:
        return db.session.scalar(sa.select(sa.func.count()).select_from(model))

    return (count(BatchDecision), count(Signature), count(TaskAcknowledgement), count(User),
            db.session.scalar(sa.select(sa.func.max(AuditEntry.seq))),
            db.session.scalars(sa.select(Batch.status).order_by(Batch.id)).all())


def _refused_alike(client, *, api: tuple[str, dict, dict], page: tuple[str, dict, str], api_field: str,
                   message: str | None, statuses: tuple[int, ...] = (422,)) -> None:
    """The API refuses its body naming only `api_field`, with `message` (or, when None, whatever it says); the
    page refuses its form data with the same message next to its own field; nothing is saved by either."""
    before = _saved()
    answer = client.post(api[0], headers=api[1], json=api[2])
    assert answer.status_code in statuses, answer.get_data(as_text=True)
    fields = answer.get_json()["error"]["fields"]
    assert set(fields) == {api_field}, fields
    message = message or fields[api_field]
    assert fields[api_field] == message
    assert _saved() == before
    shown = client.post(page[0], data=page[1])
    assert shown.status_code == 422, shown.get_data(as_text=True)[:500]
    assert field_error(shown.get_data(as_text=True), page[2]) == message
    assert _saved() == before


# The bad texts every free-text field is given, with what both doors say (None: the length message).
TEXT_CASES = [
    ("\x00", CONTROL_MESSAGE),
    ("\u202e", BIDI_MESSAGE),
    (LONG, TOO_LONG),
]


# --- the commands alone --------------------------------------------------------------------------------------


def test_each_decision_is_read_by_its_own_command_in_its_page_s_words():
    assert isinstance(ReviewDecision.parse({"outcome": " Reviewed ", "comment": "ok", "password": PASSWORD}),
                      ReviewBatch)
    assert isinstance(ReviewDecision.parse({"outcome": "returned", "comment": "fix P2"}), ReturnBatch)
    with pytest.raises(ValidationFailed) as refused:
        ReviewDecision.parse({"outcome": "returned"})
    assert refused.value.fields == {"comment": "Say what must be corrected before the review."}
    with pytest.raises(ValidationFailed) as refused:
        ReviewDecision.parse({"outcome": "approved", "comment": "ok"})
    assert set(refused.value.fields) == {"outcome"}
    # The password is asked only once the fields are right, and only of a signed outcome.
    with pytest.raises(ValidationFailed) as refused:
        ReviewDecision.parse({"outcome": "reviewed"})
    assert set(refused.value.fields) == {"comment"}
    with pytest.raises(ValidationFailed) as refused:
        ReviewDecision.parse({"outcome": "reviewed", "comment": "ok"})
    assert refused.value.fields == {"password": "Enter your password to sign."}
    decided = QpDecide.parse({"decision": "conditional", "reason": "patient scheduled", "password": PASSWORD,
                              "expected_final_date": "2026-12-01"})
    assert isinstance(decided, ReleaseConditionally) and decided.details() == {
        "expected_final_date": dt.date(2026, 12, 1)}
    with pytest.raises(ValidationFailed) as refused:
        QpDecide.parse({"decision": "reject", "password": PASSWORD})
    assert refused.value.fields == {"reason": "Give the reason for the rejection."}
    with pytest.raises(ValidationFailed) as refused:
        QpDecide.parse({"decision": "release", "reason": "x", "password": PASSWORD, "physician_name": "Dr. A"})
    assert refused.value.fields == {"physician_name": "Leave out for decision release."}
    with pytest.raises(ValidationFailed) as refused:
        QpDecide.parse({"decision": "exceptional", "reason": "x", "password": PASSWORD,
                        "sponsor_notified_at": "2026-11-21T09:30:00"})
    assert set(refused.value.fields) == {"sponsor_notified_at"} and "offset" in \
        refused.value.fields["sponsor_notified_at"]


def test_a_password_is_taken_as_typed_and_a_user_s_roles_are_one_field():
    command = CreateUser.parse({"username": "anna.rossi", "full_name": " Anna Rossi ", "email": "a@example.org",
                                "password": " Temporary-Pass-2026! ", "roles": [{"role": "qa", "site": "BG"}]})
    assert (command.full_name, command.password) == ("Anna Rossi", " Temporary-Pass-2026! ")
    with pytest.raises(ValidationFailed) as refused:
        CreateUser.parse({"username": "anna.rossi", "full_name": "A", "email": "a@example.org", "password": "p",
                          "roles": [{"role": "wizard"}]})
    assert set(refused.value.fields) == {"roles"} and "wizard" in refused.value.fields["roles"]
    with pytest.raises(ValidationFailed) as refused:
        AcknowledgeTask.parse({"capacity": "janitor", "comment": "x", "password": PASSWORD})
    assert refused.value.fields == {"capacity": "Choose QA or the treating physician's contact."}


# --- QA review -----------------------------------------------------------------------------------------------

REVIEW_CASES = [("", "Write the review comment (it is part of the signed record)."),
                ("   ", "Write the review comment (it is part of the signed record)."), *TEXT_CASES]


@pytest.mark.parametrize(("comment", "message"), REVIEW_CASES, ids=[f"case-{i}" for i in range(len(REVIEW_CASES))])
def test_a_review_is_refused_alike_at_the_page_and_the_api(client, plant, sites, auth, comment, message):  # noqa: F811
    batch = awaiting_review(plant, sites)
    number = batch.number
    headers = auth(plant.reviewer)
    login(client, plant.reviewer.username)
    _refused_alike(client, api=(f"{API}/batches/{number}/review", headers,
                                {"outcome": "reviewed", "comment": comment, "password": PASSWORD}),
                   page=(f"/releases/{number}/review", signed("review", "REVIEWED", plant.reviewer, reason=comment),
                         "review-reason"), api_field="comment", message=message)


def test_a_review_without_the_password_is_refused_alike(client, plant, sites, auth):  # noqa: F811
    batch = awaiting_review(plant, sites)
    number = batch.number
    login(client, plant.reviewer.username)
    _refused_alike(client, api=(f"{API}/batches/{number}/review", auth(plant.reviewer),
                                {"outcome": "reviewed", "comment": "Record complete"}),
                   page=(f"/releases/{number}/review",
                         signed("review", "REVIEWED", plant.reviewer, password="", reason="Record complete"),
                         "review-password"), api_field="password", message="Enter your password to sign.")


def test_a_lone_surrogate_in_a_review_is_refused_as_the_browser_s_replacement_is(client, plant, sites, auth):  # noqa: F811
    batch = awaiting_review(plant, sites)
    number = batch.number
    login(client, plant.reviewer.username)
    headers = auth(plant.reviewer)
    before = _saved()
    api = client.post(f"{API}/batches/{number}/review", headers=headers,
                      json={"outcome": "reviewed", "comment": "ok\ud800", "password": PASSWORD})
    assert api.status_code == 422 and api.get_json()["error"]["fields"] == {"comment": SURROGATE_MESSAGE}
    page = client.post(f"/releases/{number}/review", data=signed("review", "REVIEWED", plant.reviewer,
                                                                   reason="ok\ufffd"))
    assert page.status_code == 422 and field_error(page.get_data(as_text=True), "review-reason") == SURROGATE_MESSAGE
    assert _saved() == before


@pytest.mark.parametrize("comment", [5, ["ok"], {"text": "ok"}, True])
def test_a_review_comment_that_is_not_text_is_refused_and_saves_nothing(client, plant, sites, auth, comment):  # noqa: F811
    batch = awaiting_review(plant, sites)
    headers = auth(plant.reviewer)
    before = _saved()
    api = client.post(f"{API}/batches/{batch.number}/review", headers=headers,
                      json={"outcome": "reviewed", "comment": comment, "password": PASSWORD})
    assert api.status_code == 422 and api.get_json()["error"]["fields"] == {"comment": "Must be a string."}
    assert _saved() == before


RETURN_CASES = [("", "Say what must be corrected before the review."), *TEXT_CASES]


@pytest.mark.parametrize(("comment", "message"), RETURN_CASES, ids=[f"case-{i}" for i in range(len(RETURN_CASES))])
def test_a_return_is_refused_alike_at_the_page_and_the_api(client, plant, sites, auth, comment, message):  # noqa: F811
    batch = awaiting_review(plant, sites)
    number = batch.number
    login(client, plant.reviewer.username)
    _refused_alike(client, api=(f"{API}/batches/{number}/review", auth(plant.reviewer),
                                {"outcome": "returned", "comment": comment}),
                   page=(f"/releases/{number}/review/return", {"return-reason": comment}, "return-reason"),
                   api_field="comment", message=message)


# --- QP decisions --------------------------------------------------------------------------------------------

PAST = (dt.date.today() - dt.timedelta(days=3)).isoformat()
CONDITIONAL_CASES = [
    ("reason", {"reason": ""}, "Justify the release before the sterility result is final."),
    ("reason", {"reason": "ok\x00"}, CONTROL_MESSAGE),
    ("reason", {"reason": "ok\u200f"}, BIDI_MESSAGE),
    ("reason", {"reason": LONG}, TOO_LONG),
    ("expected_final_date", {"expected_final_date": "0001-01-01"}, None),
    ("expected_final_date", {"expected_final_date": "9999-12-31"}, None),
    ("expected_final_date", {"expected_final_date": PAST}, "The expected date is in the past."),
    ("password", {"password": ""}, "Enter your password to sign."),
    *[("expected_final_date", {"expected_final_date": text}, DATE_FORMAT) for text in BAD_DATES],
]


@pytest.mark.parametrize(("field", "change", "message"), CONDITIONAL_CASES,
                         ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(CONDITIONAL_CASES)])
def test_a_qp_decision_is_refused_alike_at_the_page_and_the_api(client, plant, sites, auth, field, change,  # noqa: F811
                                                                 message):
    batch = awaiting_certification(plant, sites)
    number = batch.number
    body = {"reason": "Patient scheduled", "password": PASSWORD} | change
    login(client, plant.qp.username)
    page = signed("conditional", "QP_CONDITIONAL", plant.qp, **body)
    _refused_alike(client, api=(f"{API}/batches/{number}/certification", auth("qp"),
                                {"decision": "conditional", **body}),
                   page=(f"/releases/{number}/certification/conditional", page, f"conditional-{field}"),
                   api_field=field, message=message)


EXCEPTIONAL_CASES = [
    ("physician_name", {"physician_name": ""}, "Record the treating physician who requested the product."),
    ("physician_name", {"physician_name": "Dr.\x07Bianchi"}, CONTROL_MESSAGE),
    ("physician_name", {"physician_name": "x" * 201}, "Use at most 200 characters (this has 201)."),
    ("sponsor_reference", {"sponsor_reference": "SP\u202e77"}, BIDI_MESSAGE),
    ("risk_evaluation_reference", {"risk_evaluation_reference": LONG},
     "Use at most 300 characters (this has 10000)."),
    ("physician_request_date", {"physician_request_date": "1899-12-31"}, None),
    *[("physician_request_date", {"physician_request_date": text}, DATE_FORMAT) for text in BAD_DATES],
    *[("sponsor_notified_at", {"sponsor_notified_at": text}, NOT_A_TIME) for text in BAD_TIMES],
]


@pytest.mark.parametrize(("field", "change", "message"), EXCEPTIONAL_CASES,
                         ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(EXCEPTIONAL_CASES)])
def test_an_exceptional_release_is_refused_alike_at_the_page_and_the_api(client, plant, sites, auth, field,  # noqa: F811
                                                                         change, message):
    from tests.test_release_pages import oos_awaiting_certification

    batch = oos_awaiting_certification(plant, sites)
    number = batch.number
    details = {"physician_name": "Dr. Anna Bianchi", "physician_request_date": "2026-11-20",
               "risk_evaluation_reference": "RA-2026-031", "sponsor_reference": "SP-NOTIF-77"} | change
    # The API's time carries its offset, the page's is the site's; text that is no time is sent alike through both.
    api_time, page_time = "2026-11-21T09:30:00+01:00", "2026-11-21T09:30"
    if "sponsor_notified_at" in details:
        api_time = page_time = details.pop("sponsor_notified_at")
    login(client, plant.qp.username)
    api = {"decision": "exceptional", "reason": "No alternative therapy", "password": PASSWORD, **details,
           "sponsor_notified_at": api_time}
    page = signed("exceptional", "QP_OOS_SUPPLY", plant.qp, reason="No alternative therapy", **details,
                  sponsor_notified_at=page_time)
    _refused_alike(client, api=(f"{API}/batches/{number}/certification", auth("qp"), api),
                   page=(f"/releases/{number}/certification/exceptional", page, f"exceptional-{field}"),
                   api_field=field, message=message)


# --- notification tasks --------------------------------------------------------------------------------------

ACK_CASES = [
    ("comment", {"comment": ""}, "Say what you did (e.g. units located and quarantined, physician called)."),
    ("comment", {"comment": "phoned\x00"}, CONTROL_MESSAGE),
    ("comment", {"comment": "phoned \u2066the ward"}, BIDI_MESSAGE),
    ("comment", {"comment": LONG}, TOO_LONG),
    ("physician_name", {"physician_name": ""}, "Name the treating physician you informed."),
    ("physician_name", {"physician_name": "Dr.\u200eRossi"}, BIDI_MESSAGE),
    ("physician_name", {"physician_name": LONG}, "Use at most 200 characters (this has 10000)."),
    ("password", {"password": ""}, "Enter your password to sign."),
]


@pytest.mark.parametrize(("field", "change", "message"), ACK_CASES,
                         ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(ACK_CASES)])
def test_an_acknowledgement_is_refused_alike_at_the_page_and_the_api(client, failed, users, field, change,  # noqa: F811
                                                                     message):
    enable_signing(refetch(users["technician_mz"]))
    mz = db.session.scalar(sa.select(Site.id).where(Site.code == "MZ"))
    task_id = db.session.scalar(sa.select(NotificationTask.id).where(NotificationTask.site_id == mz))
    body = {"comment": "phoned the ward", "physician_name": "Dr. Anna Rossi", "password": PASSWORD} | change
    prefix = f"t{task_id}-physician_contact"
    login(client, "technician.mz")
    page = {f"{prefix}-capacity": "physician_contact", f"{prefix}-meaning": "PHYSICIAN_INFORMED",
            f"{prefix}-username": "technician.mz", **{f"{prefix}-{name}": value for name, value in body.items()}}
    _refused_alike(client, api=(f"{API}/notification-tasks/{task_id}/acknowledgements",
                                bearer(failed["tokens"]["technician_mz"]), {"capacity": "physician_contact", **body}),
                   page=(f"/alerts/tasks/{task_id}/acknowledge/physician_contact", page, f"{prefix}-{field}"),
                   api_field=field, message=message)


# --- new users -----------------------------------------------------------------------------------------------

NEW_USER = {"username": "anna.rossi", "full_name": "Anna Rossi", "email": "anna.rossi@example.org",
            "password": "Temporary-Pass-2026!"}
# The page's name of each field the API names otherwise.
PAGE_FIELD = {"password": "temporary_password", "roles": "role"}
USER_CASES = [
    ("username", {"username": ""}, "Enter a user name."),
    ("username", {"username": "anna rossi!"}, USERNAME_MESSAGE),
    ("username", {"username": LONG}, "Use at most 64 characters (this has 10000)."),
    ("username", {"username": "Technician.BG"}, "Already used: choose another."),
    ("full_name", {"full_name": ""}, "Enter the full name."),
    ("full_name", {"full_name": "Anna\x00Rossi"}, CONTROL_MESSAGE),
    ("full_name", {"full_name": "Anna \u202eRossi"}, BIDI_MESSAGE),
    ("email", {"email": ""}, "Enter the e-mail."),
    ("email", {"email": "not-an-address"}, EMAIL_MESSAGE),
    ("password", {"password": ""}, "Set a temporary password."),
    ("password", {"password": "short"}, None),
]


@pytest.mark.parametrize(("field", "change", "message"), USER_CASES,
                         ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(USER_CASES)])
def test_a_new_user_is_refused_alike_at_the_page_and_the_api(client, users, field, change, message):
    body = NEW_USER | change
    login(client, "admin.bg")
    page = {name: value for name, value in body.items() if name != "password"} | {
        "temporary_password": body["password"], "role": "technician", "site": "BG"}
    _refused_alike(client, api=(f"{API}/users", bearer(new_token(refetch(users["admin"]))),
                                body | {"roles": [{"role": "technician", "site": "BG"}]}),
                   page=("/admin/users/new", page, PAGE_FIELD.get(field, field)), api_field=field, message=message,
                   statuses=(409, 422))


def test_a_role_held_at_a_site_without_its_site_is_refused_alike(client, users):
    login(client, "admin.bg")
    before = _saved()
    api = client.post(f"{API}/users", headers=bearer(new_token(refetch(users["admin"]))),
                      json=NEW_USER | {"roles": [{"role": "technician", "site": None}]})
    assert api.status_code in (403, 422)
    page = client.post("/admin/users/new", data=NEW_USER | {"temporary_password": NEW_USER["password"],
                                                            "role": "technician", "site": ""})
    assert page.status_code in (403, 422)
    assert _saved()[3:4] == before[3:4]  # no user


# --- the generated document ----------------------------------------------------------------------------------


def test_the_document_describes_the_release_people_and_audit_operations_from_their_declarations(client):
    document = client.get(f"{API}/openapi.json").get_json()
    paths, schemas = document["paths"], document["components"]["schemas"]
    review = paths["/batches/{number}/review"]["post"]
    assert review["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ReviewDecision"}
    assert set(review["responses"]) == {"200", "401", "403", "404", "409", "422"}
    assert schemas["ReviewDecision"]["properties"]["password"]["anyOf"][0]["format"] == "password"
    certification = paths["/batches/{number}/certification"]["post"]
    assert schemas["QpDecisionKey"]["enum"] == ["release", "conditional", "reject", "exceptional"]
    assert {"decision", "reason", "password", "meaning", "sponsor_notified_at"} <= set(
        schemas["QpDecide"]["properties"])
    assert set(certification["responses"]) == {"200", "401", "403", "404", "409", "422"}
    pdf = paths["/batches/{number}/certificate.pdf"]["get"]
    assert "application/pdf" in pdf["responses"]["200"]["content"]
    assert [(p["name"], p["in"]) for p in pdf["parameters"]] == [("number", "path"), ("number", "query")]
    users = paths["/users"]["post"]
    assert set(schemas["CreateUser"]["required"]) == {"username", "full_name", "email", "password", "roles"}
    assert set(users["responses"]) == {"201", "401", "403", "409", "422"}
    audit = paths["/audit"]["get"]
    assert {p["name"] for p in audit["parameters"]} == {"page", "per_page", "entity", "id", "user", "site",
                                                         "action", "since", "until"}
    since = next(p for p in audit["parameters"] if p["name"] == "since")
    assert since["schema"]["format"] == "date-time"
    tasks = paths["/notification-tasks"]["get"]
    assert next(p for p in tasks["parameters"] if p["name"] == "all")["schema"]["type"] == "boolean"
    # Nothing is hand-written any more: every operation is generated from its route's declaration.
    from cellfactory.api import openapi

    assert not hasattr(openapi, "PATHS")
    undeclared = [(path, method) for path, item in paths.items() for method, entry in item.items()
                  if not entry.get("operationId", "").startswith("api_")]
    assert undeclared == []
    assert not {"User", "UserCreate", "AuditEntry", "ReleaseReview", "NotificationTask"} & set(openapi.SCHEMAS)


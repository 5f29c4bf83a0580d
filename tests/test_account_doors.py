"""The account pages added for sessions, grants, unlocking and tokens refuse missing, wrong and hostile input with
a field error and save nothing (the character rule itself is tested at every door in test_hostile_input.py)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from cellfactory.auth import services as auth_services
from cellfactory.auth.models import ApiToken, GrantStatus, Role, RoleGrantRequest, User
from cellfactory.extensions import db
from tests.conftest import login

# A browser sends a lone surrogate as U+FFFD (form data is UTF-8), which the character rule refuses too.
HOSTILE = ["", "a\x00b", "\ufffd", "x" * 10_000]


def _user(username: str) -> User:
    return db.session.scalar(sa.select(User).where(User.username == username))


@pytest.mark.parametrize("name", HOSTILE)
@pytest.mark.parametrize("scope", ["read", "admin"])
def test_token_creation_refuses_bad_names_and_scopes(client, users, name, scope):
    login(client, "technician.bg")
    response = client.post("/account/tokens", data={"name": name or ("ok" if scope == "admin" else ""),
                                                    "scope": scope})
    assert response.status_code == 422
    assert db.session.scalar(sa.select(sa.func.count()).select_from(ApiToken)) == 0


@pytest.mark.parametrize(("decision", "reason"), [("maybe", "fine"), ("approve", ""), ("approve", "a\x00b"),
                                                  ("approve", "\ufffd"), ("approve", "x" * 10_000)])
def test_a_grant_decision_refuses_bad_input_and_stays_pending(client, users, decision, reason):
    request_id = auth_services.grant_role(users["admin"], users["qc_analyst"], Role.QP, "BG", "new QP").id
    login(client, "qp.bg")
    response = client.post(f"/admin/role-requests/{request_id}",
                           data={f"grant{request_id}-decision": decision, f"grant{request_id}-reason": reason})
    assert response.status_code == 422
    assert db.session.get(RoleGrantRequest, request_id).status == GrantStatus.PENDING


@pytest.mark.parametrize("reason", HOSTILE)
def test_unlocking_and_ending_a_session_refuse_bad_reasons(client, users, reason):
    for _ in range(5):
        login(client, "technician.bg", "not-the-password")
    other = client.application.test_client()
    login(other, "qc_analyst.bg")
    tech_id, qc_id = _user("technician.bg").id, _user("qc_analyst.bg").id
    login(client, "admin.bg")
    assert client.post(f"/admin/users/{tech_id}/unlock", data={"unlock-reason": reason}).status_code == 422
    assert auth_services.is_locked(_user("technician.bg"))
    [session] = auth_services.open_sessions(_user("qc_analyst.bg"))
    response = client.post(f"/admin/users/{qc_id}/sessions/{session.id}/end", data={"endsession-reason": reason})
    assert response.status_code == 422
    assert other.get("/").status_code == 200

"""Accounts: user names that cannot impersonate, passwords that are not the common ones, and a sign-in that
tells nobody whether an account exists."""

from __future__ import annotations

import gzip

import pytest

from cellfactory.auth import passwords
from cellfactory.auth import services as auth_services
from cellfactory.auth.models import Role, User
from cellfactory.core.errors import Conflict, ValidationFailed
from cellfactory.extensions import db
from tests.conftest import PASSWORD, login, make_user, refetch


def test_the_bundled_list_holds_at_least_ten_thousand_common_passwords():
    with gzip.open(passwords.COMMON_PASSWORDS_FILE, "rt", encoding="utf-8") as handle:
        entries = {line.strip() for line in handle if line.strip()}
    assert len(entries) >= 10_000
    assert {"password1234", "qwertyuiop12", "password123"} <= entries


@pytest.mark.parametrize(("password", "problem"), [
    ("password1234", "most common"),
    ("PASSWORD1234", "most common"),  # case does not hide it
    ("qwertyuiop12", "most common"),
    ("Blue-m.rossi-guard-77", "user name"),
    ("Mario-Rossi-Password-9", "your name"),
    ("rossi-in-cleanroom-7", "your name"),
])
def test_password_policy_refuses_common_passwords_and_the_users_own_names(users, password, problem):
    user = make_user("m.rossi", [(Role.TECHNICIAN, "BG")])
    user.full_name = "Mario Rossi"
    with pytest.raises(ValidationFailed) as refused:
        auth_services.change_own_password(user, PASSWORD, password)
    assert problem in refused.value.fields["new_password"]
    assert passwords.password_matches(refetch(user).password_hash, PASSWORD)


def test_a_name_part_shorter_than_three_letters_is_not_refused(users):
    assert passwords.policy_problems("Li-Orange-Harbour-31", username="x.li", full_name="Xu Li", min_length=12,
                                     previous_hashes=[], history_size=5) == []


@pytest.mark.parametrize("username", ["qр.bg", "josé.bg", "tech bg", "tech/bg", "", "x" * 65])
def test_user_names_are_ascii_letters_digits_dot_dash_underscore(users, username):
    with pytest.raises(ValidationFailed) as refused:
        make_user(username, [(Role.TECHNICIAN, "BG")])
    assert "username" in refused.value.fields


def test_user_names_are_unique_without_regard_to_case(users):
    with pytest.raises(Conflict):
        make_user("QP.BG", [(Role.QP, "BG")])


def test_unknown_user_locked_and_deactivated_get_the_same_answer_as_a_wrong_password(client, users, monkeypatch):
    qa_id, admin_id = users["qa"].id, users["admin"].id
    checks: list[str] = []
    real = passwords.password_matches
    monkeypatch.setattr(passwords, "password_matches", lambda h, p: checks.append(p) or real(h, p))
    monkeypatch.setattr(auth_services, "password_matches", passwords.password_matches)
    wrong = login(client, "technician.bg", "not-the-password-1")
    unknown = login(client, "nobody.at.all", "not-the-password-2")
    assert checks == ["not-the-password-1", "not-the-password-2"]  # an Argon2 check for the unknown user too
    auth_services.set_active(db.session.get(User, admin_id), db.session.get(User, qa_id), False, "left")
    deactivated = login(client, "qa.bg", PASSWORD)
    for _ in range(5):
        login(client, "qc_analyst.bg", "not-the-password-3")
    locked = login(client, "qc_analyst.bg", PASSWORD)
    bodies = []
    for response in (wrong, unknown, deactivated, locked):
        assert response.status_code == 401
        text = response.get_data(as_text=True)
        assert auth_services.SIGN_IN_FAILED in text
        bodies.append(text.replace("not-the-password-1", "").replace("not-the-password-2", ""))
    assert "until" not in bodies[3]  # the lock's end would tell that the account exists

"""The JSON API base (/api/v1): bearer tokens, the error envelope, pagination, sites, users, audit, OpenAPI."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import re

import pytest
import sqlalchemy as sa

from cellfactory import create_app
from cellfactory.api.contract import check_types
from cellfactory.audit import services as audit_services
from cellfactory.audit.models import AuditEntry
from cellfactory.auth import services as auth_services
from cellfactory.auth.models import ApiToken, Role, User
from cellfactory.auth.passwords import password_matches
from cellfactory.core.errors import ValidationFailed
from cellfactory.extensions import db
from cellfactory.sites.commands import CreateSite
from cellfactory.sites.models import Site
from tests.conftest import PASSWORD, fresh_database, login, make_config, make_user, refetch

API = "/api/v1"


# --- helpers -------------------------------------------------------------------------------------
#
# Requests run in their own app context and end by removing the (thread-scoped) session, so ORM
# objects a test holds are detached after a request. Tests therefore take tokens and ids up front
# (`auth`, `ids`) and reload users with `fresh` when they need them after a request.


def new_token(user: User, name: str = "test") -> str:
    return auth_services.create_token(user, user, name)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def tokens(users) -> dict[str, str]:
    """One API token per user of the `users` fixture, by the same keys."""
    return {key: new_token(user) for key, user in users.items()}


@pytest.fixture
def ids(users) -> dict[str, int]:
    return {key: user.id for key, user in users.items()}


@pytest.fixture
def auth(tokens):
    def headers(key: str) -> dict[str, str]:
        return bearer(tokens[key])

    return headers


@pytest.fixture
def fresh(ids):
    def load(key: str) -> User:
        return db.session.get(User, ids[key])

    return load


def assert_error(response, status: int, code: str, *fields: str) -> dict:
    """The response is the error envelope with this status and code, naming exactly `fields` (if given)."""
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"code", "message", "fields"}
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"].strip()
    assert isinstance(error["fields"], dict)
    assert all(isinstance(v, str) and v for v in error["fields"].values())
    if fields:
        assert set(error["fields"]) == set(fields), error
    return error


def audit_rows(**where) -> list[AuditEntry]:
    query = sa.select(AuditEntry).order_by(AuditEntry.seq)
    for name, value in where.items():
        query = query.where(getattr(AuditEntry, name) == value)
    return list(db.session.scalars(query))


def last_seq() -> int:
    return db.session.scalar(sa.select(sa.func.max(AuditEntry.seq))) or 0


# --- authentication ------------------------------------------------------------------------------


def test_no_authorization_header_is_401_with_envelope_and_challenge(client, users):
    response = client.get(f"{API}/me")
    error = assert_error(response, 401, "unauthenticated")
    assert error["fields"] == {}
    assert "Bearer" in error["message"]
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")


@pytest.mark.parametrize("header", [
    "Basic dGVjaG5pY2lhbi5iZzpDb3JyZWN0LUhvcnNlLUJhdHRlcnktNDI=",
    "Bearer",
    "Bearer    ",
    "Token {token}",
    "{token}",
    "Bearer: {token}",
    "Basic {token}",
])
def test_malformed_authorization_is_401(client, users, header):
    token = new_token(users["technician"])
    response = client.get(f"{API}/me", headers={"Authorization": header.format(token=token)})
    assert_error(response, 401, "unauthenticated")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    # The same token with the right scheme works: the refusal above is about the header's form.
    assert client.get(f"{API}/me", headers=bearer(token)).status_code == 200


def test_bearer_scheme_is_case_insensitive_and_token_whitespace_tolerated(client, users):
    token = new_token(users["technician"])
    response = client.get(f"{API}/me", headers={"Authorization": f"bearer  {token} "})
    assert response.status_code == 200
    assert response.get_json()["username"] == "technician.bg"


@pytest.mark.parametrize("token", ["cf_" + "x" * 43, "not-a-token", "cf_", "é" * 10])
def test_unknown_token_is_401(client, users, token):
    response = client.get(f"{API}/me", headers={"Authorization": f"Bearer {token}"})
    error = assert_error(response, 401, "unauthenticated")
    assert "unknown" in error["message"]
    assert "WWW-Authenticate" in response.headers


def test_revoked_token_is_401(client, users, fresh, ids):
    token, other = new_token(users["technician"]), new_token(users["technician"])
    assert client.get(f"{API}/me", headers=bearer(token)).status_code == 200
    row = db.session.scalar(sa.select(ApiToken).where(ApiToken.user_id == ids["technician"])
                            .order_by(ApiToken.id).limit(1))
    auth_services.revoke_token(fresh("technician"), row, "laptop lost")
    assert_error(client.get(f"{API}/me", headers=bearer(token)), 401, "unauthenticated")
    # The user's other token keeps working.
    assert client.get(f"{API}/me", headers=bearer(other)).status_code == 200


def test_token_of_deactivated_user_is_401(client, users, fresh, ids):
    token = new_token(users["technician"])
    assert client.get(f"{API}/me", headers=bearer(token)).status_code == 200
    auth_services.set_active(fresh("admin"), fresh("technician"), False, "left the company")
    assert_error(client.get(f"{API}/me", headers=bearer(token)), 401, "unauthenticated")
    # Deactivation also revokes the user's tokens, so reactivation does not bring them back.
    row = db.session.scalar(sa.select(ApiToken).where(ApiToken.user_id == ids["technician"]))
    assert row.revoked_at is not None and row.revoked_by_id == ids["admin"]
    auth_services.set_active(fresh("admin"), fresh("technician"), True, "came back")
    assert_error(client.get(f"{API}/me", headers=bearer(token)), 401, "unauthenticated")


def test_token_of_inactive_user_is_401_even_if_not_revoked(client, users, fresh):
    token = new_token(users["technician"])
    # Bypassing the service, which would also revoke the token: the token check itself must refuse.
    audit_services.set_reason(db.session, "test: deactivated directly")
    fresh("technician").active = False
    db.session.commit()
    assert_error(client.get(f"{API}/me", headers=bearer(token)), 401, "unauthenticated")


def test_token_of_locked_user_is_401(client, users, fresh):
    token = new_token(users["technician"])
    fresh("technician").locked_until = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)
    db.session.commit()
    assert_error(client.get(f"{API}/me", headers=bearer(token)), 401, "unauthenticated")
    fresh("technician").locked_until = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    db.session.commit()
    assert client.get(f"{API}/me", headers=bearer(token)).status_code == 200


def test_browser_session_does_not_authenticate_the_api(client, users):
    assert login(client, "technician.bg").status_code == 302
    assert client.get("/").status_code == 200  # the session cookie is valid for pages
    response = client.get(f"{API}/me")
    assert_error(response, 401, "unauthenticated")
    assert_error(client.get(f"{API}/sites"), 401, "unauthenticated")
    response = client.post(f"{API}/sites", json={"code": "XX", "name": "X", "facility_id": "A9993",
                                                 "timezone": "Europe/Rome"})
    assert_error(response, 401, "unauthenticated")
    assert db.session.scalar(sa.select(Site).where(Site.code == "XX")) is None


def test_unauthenticated_write_changes_nothing(client, users):
    before = last_seq()
    response = client.post(f"{API}/users", json={"username": "mallory", "full_name": "M", "email": "m@x.org",
                                                  "roles": [{"role": "auditor"}], "password": PASSWORD})
    assert_error(response, 401, "unauthenticated")
    assert db.session.scalar(sa.select(User).where(User.username == "mallory")) is None
    assert last_seq() == before


def test_token_of_user_without_any_role_is_refused_everywhere(client, users, fresh, ids):
    token = new_token(users["technician_mz"])
    admin = fresh("admin_mz")
    for assignment in fresh("technician_mz").active_roles:
        auth_services.revoke_role(admin, assignment, "moved away")
    before = last_seq()
    for path in ("/me", "/sites", "/sites/MZ", "/users/technician.mz", "/audit"):
        assert_error(client.get(f"{API}{path}", headers=bearer(token)), 403, "forbidden")
    denied = [e for e in audit_rows() if e.seq > before]
    assert {(e.action, e.actor_id) for e in denied} == {("access_denied", ids["technician_mz"])}
    assert [e.changes["attempted"] for e in denied] == ["api.me", "api.sites", "api.site", "api.user",
                                                        "api.audit_trail"]


def test_every_api_view_declares_who_may_call_it(app):
    views = {name: view for name, view in app.view_functions.items() if name.startswith("api.")}
    assert len(views) >= 8
    undeclared = [name for name, view in views.items()
                  if not getattr(view, "public", False) and not getattr(view, "allowed_roles", None)]
    assert undeclared == []
    assert [name for name, view in views.items() if getattr(view, "public", False)] == ["api.openapi"]


# --- tokens ---------------------------------------------------------------------------------------


def test_tokens_are_stored_hashed(users):
    user = users["qa"]
    raw = new_token(user, "LIMS import")
    assert raw.startswith("cf_") and len(raw) > 40
    rows = db.session.execute(sa.select(ApiToken.__table__)).mappings().all()
    assert len(rows) == 1
    for value in rows[0].values():
        assert raw not in str(value)
    row = rows[0]
    # Keyed with the server's secret (make_config's "test-secret-key"): a bare SHA-256 anyone could compute.
    key = b"cellfactory token digest\x00test-secret-key"
    assert row["token_hash"] == hmac.new(key, raw.encode(), hashlib.sha256).hexdigest()
    assert row["name"] == "LIMS import"
    assert raw.startswith(row["prefix"]) and len(row["prefix"]) < 12
    # Neither the token nor its hash is written to the audit trail.
    for entry in audit_rows(entity_type="api_token"):
        text = str(entry.changes)
        assert raw not in text and row["token_hash"] not in text
    assert auth_services.user_for_token(raw).id == user.id
    assert auth_services.user_for_token(row["token_hash"]) is None  # the hash itself is not a token


def test_each_token_is_new(users):
    user = users["qa"]
    assert new_token(user) != new_token(user)


def test_creating_and_revoking_a_token_is_audited(users):
    user = users["qp"]
    raw = new_token(user, "instrument")
    token = db.session.scalar(sa.select(ApiToken).where(ApiToken.user_id == user.id))
    created = audit_rows(entity_type="api_token", entity_id=str(token.id))
    assert [e.action for e in created] == ["create"]
    assert created[0].actor_id == user.id
    assert created[0].changes["token_hash"] == [None, audit_services.REDACTED]
    assert created[0].changes["name"] == [None, "instrument"]
    assert created[0].entity_label == f"{raw[:10]}…"

    auth_services.revoke_token(user, token, "no longer needed")
    entries = audit_rows(entity_type="api_token", entity_id=str(token.id))
    assert [e.action for e in entries] == ["create", "update"]
    revoked = entries[1]
    assert revoked.reason == "no longer needed"
    assert revoked.actor_id == user.id
    assert revoked.changes["revoked_at"][0] is None and revoked.changes["revoked_at"][1]
    assert revoked.changes["revoked_by_id"] == [None, user.id]


def test_token_rules(users):
    from cellfactory.core.errors import Conflict, PermissionDenied, ValidationFailed

    with pytest.raises(PermissionDenied):
        auth_services.create_token(users["admin"], users["technician"], "impersonation")
    token_raw = new_token(users["technician"])
    token = db.session.scalar(sa.select(ApiToken).where(ApiToken.user_id == users["technician"].id))
    with pytest.raises(ValidationFailed):
        auth_services.revoke_token(users["technician"], token, "  ")
    with pytest.raises(PermissionDenied):
        auth_services.revoke_token(users["qa"], token, "not mine")
    auth_services.revoke_token(users["admin"], token, "offboarding")
    with pytest.raises(Conflict):
        auth_services.revoke_token(users["admin"], token, "again")
    assert auth_services.user_for_token(token_raw) is None


# --- /me ------------------------------------------------------------------------------------------


def test_me_returns_roles_and_signing_status(client, users, auth):
    response = client.get(f"{API}/me", headers=auth("technician"))
    assert response.status_code == 200
    body = response.get_json()
    assert body["username"] == "technician.bg"
    assert body["full_name"] == "Technician.Bg Tester"
    assert body["active"] is True
    assert [(r["role"], r["site"]) for r in body["roles"]] == [("technician", "BG")]
    assert body["signing"]["enabled"] is False
    assert len(body["signing"]["missing"]) == 2
    assert not {"password", "password_hash", "password_changed_at"} & set(body)


def test_me_for_network_auditor_and_signer(client, users, sites, auth):
    auditor = client.get(f"{API}/me", headers=auth("auditor_network")).get_json()
    assert [(r["role"], r["site"]) for r in auditor["roles"]] == [("auditor", None)]
    signer = make_user("qp.signer", [(Role.QP, "BG"), (Role.QP, "MZ")], signing=True)
    body = client.get(f"{API}/me", headers=bearer(new_token(signer))).get_json()
    assert sorted((r["role"], r["site"]) for r in body["roles"]) == [("qp", "BG"), ("qp", "MZ")]
    assert body["signing"] == {"enabled": True, "missing": []}


def test_me_shows_only_active_roles(client, users):
    admin, qa = users["admin"], users["qa"]
    auth_services.grant_role(admin, qa, Role.QC_ANALYST, "BG", "covering")
    assignment = next(r for r in qa.active_roles if r.role == Role.QA)
    auth_services.revoke_role(admin, assignment, "moved to the QC lab")
    body = client.get(f"{API}/me", headers=bearer(new_token(qa))).get_json()
    assert [(r["role"], r["site"]) for r in body["roles"]] == [("qc_analyst", "BG")]


# --- pagination -----------------------------------------------------------------------------------


def all_usernames() -> list[str]:
    return list(db.session.scalars(sa.select(User.username).order_by(User.username)))


def test_pagination_default(client, users, auth):
    response = client.get(f"{API}/users", headers=auth("admin"))
    assert response.status_code == 200
    body = response.get_json()
    assert set(body) == {"items", "page", "per_page", "total"}
    assert body["page"] == 1 and body["per_page"] == 50
    assert body["total"] == len(all_usernames()) == 9
    assert [u["username"] for u in body["items"]] == all_usernames()


def test_pagination_page_and_per_page(client, users, auth):
    headers = auth("admin")
    names = all_usernames()
    body = client.get(f"{API}/users?page=2&per_page=4", headers=headers).get_json()
    assert (body["page"], body["per_page"], body["total"]) == (2, 4, len(names))
    assert [u["username"] for u in body["items"]] == names[4:8]
    last = client.get(f"{API}/users?page=3&per_page=4", headers=headers).get_json()
    assert [u["username"] for u in last["items"]] == names[8:]
    beyond = client.get(f"{API}/users?page=99&per_page=4", headers=headers).get_json()
    assert beyond["items"] == [] and beyond["total"] == len(names) and beyond["page"] == 99
    widest = client.get(f"{API}/users?per_page=200", headers=headers).get_json()
    assert widest["per_page"] == 200 and len(widest["items"]) == len(names)


@pytest.mark.parametrize(("query", "fields"), [
    ("per_page=201", {"per_page"}),
    ("per_page=0", {"per_page"}),
    ("per_page=-5", {"per_page"}),
    ("per_page=1.5", {"per_page"}),
    ("page=0", {"page"}),
    ("page=-1", {"page"}),
    ("page=abc", {"page"}),
    ("page=", {"page"}),
    ("page=99999999999999999999999", {"page"}),
    ("page=0&per_page=1000", {"page", "per_page"}),
])
def test_pagination_errors_are_422_naming_the_parameter(client, users, query, fields, auth):
    for path in ("/users", "/sites", "/audit"):
        response = client.get(f"{API}{path}?{query}", headers=auth("auditor_network"))
        assert_error(response, 422, "invalid", *fields)


def test_large_page_number_that_fits_is_an_empty_page(client, users, auth):
    body = client.get(f"{API}/sites?page=1000000&per_page=200", headers=auth("auditor_network")).get_json()
    assert body["items"] == [] and body["total"] == 2


# --- /sites ---------------------------------------------------------------------------------------


def site_codes(client, headers) -> list[str]:
    response = client.get(f"{API}/sites", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["total"] == len(body["items"])
    return [s["code"] for s in body["items"]]


def test_site_visibility(client, users, auth):
    assert site_codes(client, auth("technician")) == ["BG"]
    assert site_codes(client, auth("technician_mz")) == ["MZ"]
    assert site_codes(client, auth("admin_mz")) == ["MZ"]
    assert site_codes(client, auth("auditor_network")) == ["BG", "MZ"]


def test_site_json(client, users, auth):
    response = client.get(f"{API}/sites/BG", headers=auth("technician"))
    assert response.status_code == 200
    assert response.get_json() == {"code": "BG", "name": "Cell Factory Bergamo", "facility_id": "A9991",
                                   "timezone": "Europe/Rome", "address": "", "active": True, "language": None,
                                   "eu_country": "", "te_code": "", "version": 1}
    assert client.get(f"{API}/sites/bg", headers=auth("technician")).get_json()["code"] == "BG"


def test_site_of_another_site_is_403_and_unknown_is_404(client, users, auth):
    error = assert_error(client.get(f"{API}/sites/MZ", headers=auth("technician")), 403, "forbidden")
    assert "Monza" not in error["message"]
    assert_error(client.get(f"{API}/sites/ZZ", headers=auth("technician")), 404, "not_found")
    assert client.get(f"{API}/sites/MZ", headers=auth("auditor_network")).status_code == 200


NEW_SITE = {"code": "PV", "name": "Cell Factory Pavia", "facility_id": "A9993", "timezone": "Europe/Rome",
            "address": "Viale Golgi 19, Pavia"}


def test_admin_creates_site_and_it_is_audited(client, users, auth, ids):
    response = client.post(f"{API}/sites", json={**NEW_SITE, "code": "pv", "facility_id": " a9993 "},
                           headers=auth("admin"))
    assert response.status_code == 201, response.get_data(as_text=True)
    body = response.get_json()
    assert body == {"code": "PV", "name": "Cell Factory Pavia", "facility_id": "A9993", "timezone": "Europe/Rome",
                    "address": "Viale Golgi 19, Pavia", "active": True, "language": None, "eu_country": "",
                    "te_code": "", "version": 1}
    site = db.session.scalar(sa.select(Site).where(Site.code == "PV"))
    assert site is not None and site.created_by_id == ids["admin"]
    entries = audit_rows(entity_type="site", entity_id=str(site.id))
    assert [e.action for e in entries] == ["create"]
    assert entries[0].actor_id == ids["admin"]
    assert entries[0].site_id == site.id
    assert entries[0].changes["code"] == [None, "PV"]
    assert entries[0].changes["facility_id"] == [None, "A9993"]
    # The new site shows up for network-wide readers.
    assert "PV" in site_codes(client, auth("auditor_network"))


def test_technician_cannot_create_site_and_the_attempt_is_audited(client, users, auth, ids):
    headers = auth("technician")
    before = last_seq()
    response = client.post(f"{API}/sites", json=NEW_SITE, headers=headers)
    assert_error(response, 403, "forbidden")
    assert db.session.scalar(sa.select(Site).where(Site.code == "PV")) is None
    new = [e for e in audit_rows() if e.seq > before]
    assert [e.action for e in new] == ["access_denied"]
    assert new[0].actor_id == ids["technician"]
    assert new[0].entity_type == "app_user" and new[0].entity_label == "technician.bg"
    assert new[0].changes == {"attempted": "api.create_site", "method": "POST"}
    assert audit_services.verify_chain(db.session.connection()).intact
    # Refused before the body is looked at: no validation details for someone who may not create sites.
    for body in ({}, {**NEW_SITE, "timezone": "Nowhere"}):
        assert_error(client.post(f"{API}/sites", json=body, headers=headers), 403, "forbidden")
    assert_error(client.post(f"{API}/sites", json=NEW_SITE, headers=auth("qa")), 403, "forbidden")
    assert_error(client.post(f"{API}/sites", json=NEW_SITE, headers=auth("auditor_network")), 403, "forbidden")


def test_reading_another_site_is_recorded_as_access_denied(client, users, auth, ids):
    before = last_seq()
    assert_error(client.get(f"{API}/sites/MZ", headers=auth("technician")), 403, "forbidden")
    new = [e for e in audit_rows() if e.seq > before]
    assert [(e.action, e.actor_id) for e in new] == [("access_denied", ids["technician"])]
    assert new[0].changes == {"attempted": "api.site", "method": "GET"}


@pytest.mark.parametrize(("changes", "fields"), [
    ({"facility_id": "O1234"}, {"facility_id"}),  # letter O is never used in a FIN
    ({"facility_id": "01234"}, {"facility_id"}),
    ({"facility_id": "A12B4"}, {"facility_id"}),
    ({"facility_id": "A99"}, {"facility_id"}),
    ({"timezone": "Mars/Olympus"}, {"timezone"}),
    ({"timezone": "Europe/Rome/../../etc/passwd"}, {"timezone"}),
    # Issue 15: names the operating system cannot open as a file were a server error.
    ({"timezone": "0" * 300}, {"timezone"}),
    ({"timezone": "Europe"}, {"timezone"}),
    ({"timezone": "Europe/"}, {"timezone"}),
    ({"facility_id": "!!!!!", "timezone": "Nowhere"}, {"facility_id", "timezone"}),
    ({"code": "P-V"}, {"code"}),
    ({"code": "TOOLONGCODE"}, {"code"}),
    ({"name": "   "}, {"name"}),
])
def test_create_site_invalid_is_422_with_fields(client, users, changes, fields, auth):
    before = last_seq()
    response = client.post(f"{API}/sites", json={**NEW_SITE, **changes}, headers=auth("admin"))
    assert_error(response, 422, "invalid", *fields)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(Site)) == 2
    assert last_seq() == before


@pytest.mark.parametrize(("body", "fields"), [
    ({}, {"code", "name", "facility_id", "timezone"}),
    ({"code": "PV", "name": "Pavia"}, {"facility_id", "timezone"}),
    ({**NEW_SITE, "code": ""}, {"code"}),
    ({**NEW_SITE, "timezone": None}, {"timezone"}),
    ({**NEW_SITE, "code": 12}, {"code"}),
    ({**NEW_SITE, "name": ["Pavia"]}, {"name"}),
    ({**NEW_SITE, "timezone": {"tz": "Europe/Rome"}}, {"timezone"}),
    ({**NEW_SITE, "address": 7}, {"address"}),
])
def test_create_site_missing_or_mistyped_fields_are_422(client, users, body, fields, auth):
    response = client.post(f"{API}/sites", json=body, headers=auth("admin"))
    assert_error(response, 422, "invalid", *fields)


@pytest.mark.parametrize("kwargs", [
    {"data": "code=PV&name=Pavia", "content_type": "application/x-www-form-urlencoded"},
    {"data": "{not json", "content_type": "application/json"},
    {"data": '["a", "list"]', "content_type": "application/json"},
    {"data": "null", "content_type": "application/json"},
    {},
])
def test_create_site_not_a_json_object_is_422(client, users, kwargs, auth):
    response = client.post(f"{API}/sites", headers=auth("admin"), **kwargs)
    error = assert_error(response, 422, "invalid")
    assert "JSON" in error["message"]


def test_create_site_duplicate_is_409(client, users, auth):
    headers = auth("admin")
    error = assert_error(client.post(f"{API}/sites", json={**NEW_SITE, "code": "bg"}, headers=headers),
                         409, "conflict", "code")
    assert "BG" in error["message"]
    assert_error(client.post(f"{API}/sites", json={**NEW_SITE, "facility_id": "A9992"}, headers=headers),
                 409, "conflict", "facility_id")
    assert client.post(f"{API}/sites", json=NEW_SITE, headers=headers).status_code == 201
    assert_error(client.post(f"{API}/sites", json=NEW_SITE, headers=headers), 409, "conflict", "code")


# --- /users ---------------------------------------------------------------------------------------


def test_technician_cannot_list_users(client, users, auth):
    before = last_seq()
    assert_error(client.get(f"{API}/users", headers=auth("technician")), 403, "forbidden")
    assert [e.action for e in audit_rows() if e.seq > before] == ["access_denied"]


@pytest.mark.parametrize("key", ["admin", "admin_mz", "qa", "auditor", "auditor_network"])
def test_user_readers_list_users(client, users, key, auth):
    response = client.get(f"{API}/users", headers=auth(key))
    assert response.status_code == 200
    items = response.get_json()["items"]
    assert [u["username"] for u in items] == all_usernames()
    tech = next(u for u in items if u["username"] == "technician.bg")
    assert tech["email"] == "technician.bg@example.org"
    assert [(r["role"], r["site"]) for r in tech["roles"]] == [("technician", "BG")]
    assert "password_hash" not in tech


@pytest.mark.parametrize("key", ["technician", "qc_analyst", "qp", "technician_mz"])
def test_non_readers_cannot_list_users(client, users, key, auth):
    assert_error(client.get(f"{API}/users", headers=auth(key)), 403, "forbidden")


def test_read_one_user(client, users, auth):
    own = client.get(f"{API}/users/technician.bg", headers=auth("technician"))
    assert own.status_code == 200 and own.get_json()["username"] == "technician.bg"
    assert_error(client.get(f"{API}/users/qa.bg", headers=auth("technician")), 403, "forbidden")
    # A technician cannot probe which user names exist: an unknown one is refused like a known one.
    assert_error(client.get(f"{API}/users/nobody", headers=auth("technician")), 403, "forbidden")
    admin = auth("admin")
    assert client.get(f"{API}/users/qa.bg", headers=admin).get_json()["roles"][0]["role"] == "qa"
    assert_error(client.get(f"{API}/users/nobody", headers=admin), 404, "not_found")


NEW_USER = {"username": "anna.rossi", "full_name": "Anna Rossi", "email": "anna.rossi@example.org",
            "roles": [{"role": "technician", "site": "BG"}], "password": "Temporary-Pass-2026!"}


def test_admin_creates_user(client, users, auth, ids):
    body = {**NEW_USER, "roles": [{"role": "technician", "site": "BG"}, {"role": "qc_analyst", "site": "bg"}]}
    response = client.post(f"{API}/users", json=body, headers=auth("admin"))
    assert response.status_code == 201, response.get_data(as_text=True)
    data = response.get_json()
    assert data["username"] == "anna.rossi"
    assert data["full_name"] == "Anna Rossi"
    assert data["must_change_password"] is True
    assert data["active"] is True
    assert sorted((r["role"], r["site"]) for r in data["roles"]) == [("qc_analyst", "BG"), ("technician", "BG")]
    assert "Temporary-Pass-2026!" not in response.get_data(as_text=True)
    user = db.session.scalar(sa.select(User).where(User.username == "anna.rossi"))
    assert user.created_by_id == ids["admin"]
    assert password_matches(user.password_hash, "Temporary-Pass-2026!")
    entries = audit_rows(entity_type="app_user", entity_id=str(user.id), action="create")
    assert len(entries) == 1 and entries[0].actor_id == ids["admin"]
    assert entries[0].changes["password_hash"] == [None, audit_services.REDACTED]
    assert len(audit_rows(entity_type="role_assignment", action="create", actor_id=ids["admin"])) == 2
    # The new user appears in the list.
    assert "anna.rossi" in [u["username"] for u in
                            client.get(f"{API}/users", headers=auth("admin")).get_json()["items"]]


def test_network_role_without_site(client, users, auth):
    body = {**NEW_USER, "username": "net.auditor", "roles": [{"role": "auditor", "site": None}]}
    network_admin = new_token(make_user("admin.network", [(Role.ADMIN, None)]))
    assert_error(client.post(f"{API}/users", json=body, headers=auth("admin")), 403, "forbidden")
    response = client.post(f"{API}/users", json=body, headers=bearer(network_admin))
    assert response.status_code == 201
    assert response.get_json()["roles"][0]["site"] is None


def test_technician_cannot_create_user(client, users, auth):
    before = last_seq()
    assert_error(client.post(f"{API}/users", json=NEW_USER, headers=auth("technician")), 403, "forbidden")
    assert db.session.scalar(sa.select(User).where(User.username == "anna.rossi")) is None
    assert [e.action for e in audit_rows() if e.seq > before] == ["access_denied"]
    # Refused before the body is looked at.
    assert_error(client.post(f"{API}/users", data="x", headers=auth("technician")), 403, "forbidden")


@pytest.mark.parametrize(("body", "fields"), [
    ({}, {"username", "full_name", "email", "roles", "password"}),
    ({**NEW_USER, "password": ""}, {"password"}),
    ({k: v for k, v in NEW_USER.items() if k != "roles"}, {"roles"}),
    ({**NEW_USER, "roles": "technician"}, {"roles"}),
    ({**NEW_USER, "roles": [{"site": "BG"}]}, {"roles"}),
    ({**NEW_USER, "roles": ["technician"]}, {"roles"}),
    ({**NEW_USER, "roles": [{"role": "superuser", "site": "BG"}]}, {"roles"}),
    ({**NEW_USER, "roles": [{"role": ["technician"], "site": "BG"}]}, {"roles"}),
    ({**NEW_USER, "roles": [{"role": "technician", "site": 5}]}, {"roles"}),
    ({**NEW_USER, "roles": []}, {"roles"}),
    ({**NEW_USER, "roles": [{"role": "technician"}]}, {"roles"}),  # a site role needs its site
    ({**NEW_USER, "roles": [{"role": "technician", "site": "ZZ"}]}, {"roles"}),
    ({**NEW_USER, "password": "short"}, {"password"}),
    ({**NEW_USER, "password": "anna.rossi-anna.rossi"}, {"password"}),
    ({**NEW_USER, "email": "not-an-address"}, {"email"}),
    ({**NEW_USER, "username": "anna rossi!"}, {"username"}),
    ({**NEW_USER, "username": "a" * 65}, {"username"}),
    ({**NEW_USER, "username": 42}, {"username"}),
    ({**NEW_USER, "full_name": {"first": "Anna"}}, {"full_name"}),
    ({**NEW_USER, "email": ["anna@example.org"]}, {"email"}),
    ({**NEW_USER, "password": 123456789012345}, {"password"}),
])
def test_create_user_invalid_is_422_with_fields(client, users, body, fields, auth):
    before = last_seq()
    response = client.post(f"{API}/users", json=body, headers=auth("admin"))
    assert_error(response, 422, "invalid", *fields)
    assert db.session.scalar(sa.select(sa.func.count()).select_from(User)) == 9
    assert last_seq() == before


def test_create_user_role_scope_errors_name_the_roles_field(client, users, auth):
    body = {**NEW_USER, "roles": [{"role": "qp"}]}
    error = assert_error(client.post(f"{API}/users", json=body, headers=auth("admin")), 422, "invalid", "roles")
    assert "site" in error["fields"]["roles"].lower() and "Qualified Person" in error["message"]
    body = {**NEW_USER, "roles": [{"role": "qa", "site": "BG"}, {"role": "technician", "site": "XX"}]}
    error = assert_error(client.post(f"{API}/users", json=body, headers=auth("admin")), 422, "invalid", "roles")
    assert "XX" in error["message"]
    body = {**NEW_USER, "roles": [{"role": "wizard"}, {"role": "oracle", "site": "BG"}]}
    error = assert_error(client.post(f"{API}/users", json=body, headers=auth("admin")), 422, "invalid", "roles")
    assert "oracle, wizard" in error["message"] and "technician" in error["fields"]["roles"]


def test_create_user_not_json_is_422(client, users, auth):
    headers = auth("admin")
    error = assert_error(client.post(f"{API}/users", data="username=x", headers=headers), 422, "invalid")
    assert "JSON" in error["message"]
    assert_error(client.post(f"{API}/users", data="{", content_type="application/json", headers=headers),
                 422, "invalid")


def test_admin_cannot_be_given_a_gmp_role(client, users, auth):
    body = {**NEW_USER, "roles": [{"role": "admin", "site": "BG"}, {"role": "qp", "site": "BG"}]}
    error = assert_error(client.post(f"{API}/users", json=body, headers=auth("admin")), 422, "invalid", "roles")
    assert "administrator" in error["fields"]["roles"].lower()


@pytest.mark.parametrize("username", ["technician.bg", "Technician.BG", "TECHNICIAN.BG", "Auditor"])
def test_create_user_duplicate_username_is_409(client, users, username, auth):
    response = client.post(f"{API}/users", json={**NEW_USER, "username": username}, headers=auth("admin"))
    error = assert_error(response, 409, "conflict", "username")
    assert username in error["message"]
    assert db.session.scalar(sa.select(sa.func.count()).select_from(User)) == 9


def test_deactivated_username_is_never_reused(client, users, auth, fresh):
    auth_services.set_active(fresh("admin_mz"), fresh("technician_mz"), False, "left")
    body = {**NEW_USER, "username": "technician.mz", "roles": [{"role": "technician", "site": "MZ"}]}
    assert_error(client.post(f"{API}/users", json=body, headers=auth("admin_mz")), 409, "conflict", "username")


# --- /audit ---------------------------------------------------------------------------------------


@pytest.fixture
def dated_entries(monkeypatch, users):
    """Two sites created by BG's administrator at known instants (10:00 and 12:00 UTC, 2031-01-01)."""
    times = iter([dt.datetime(2031, 1, 1, 10, 0, tzinfo=dt.UTC), dt.datetime(2031, 1, 1, 12, 0, tzinfo=dt.UTC)])
    from cellfactory.sites import services as site_services

    created = []
    for code, fin in (("PV", "A9993"), ("CO", "A9994")):
        moment = next(times)
        monkeypatch.setattr(audit_services, "utcnow", lambda moment=moment: moment)
        created.append(site_services.create_site(users["admin"], CreateSite(
            code=code, name=f"Site {code}", facility_id=fin, timezone="Europe/Rome")))
    monkeypatch.undo()
    return created


def audit_items(client, headers, **params) -> list[dict]:
    response = client.get(f"{API}/audit", query_string=params, headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    body = response.get_json()
    assert body["total"] == len(body["items"]) or body["per_page"] < body["total"]
    return body["items"]


def test_audit_since_with_iso_offsets(client, users, dated_entries, auth):
    auditor = auth("auditor_network")
    # 11:30+01:00 is 10:30 UTC: after the first site, before the second.
    for since in ("2031-01-01T11:30:00+01:00", "2031-01-01T10:30:00Z", "2031-01-01T10:30:00+00:00",
                  "2031-01-01T05:30:00-05:00"):
        items = audit_items(client, auditor, since=since)
        assert [(i["entity_type"], i["entity_label"]) for i in items] == [("site", "CO")], since
    both = audit_items(client, auditor, since="2031-01-01T10:00:00Z")
    assert [i["entity_label"] for i in both] == ["CO", "PV"]  # newest first
    assert both[0]["recorded_at"] == "2031-01-01T12:00:00+00:00"
    assert audit_items(client, auditor, since="2031-01-01T12:00:00.000001Z") == []
    assert [i["entity_label"] for i in audit_items(client, auditor, since="2031-01-01T00:00:00Z",
                                                   until="2031-01-01T11:30:00+01:00")] == ["PV"]


def test_audit_since_with_unencoded_plus(client, users, dated_entries, auth):
    """`?since=...+01:00` typed into a URL arrives with a space for the '+'; it means the offset."""
    response = client.get(f"{API}/audit?since=2031-01-01T11:30:00+01:00", headers=auth("auditor_network"))
    assert response.status_code == 200, response.get_data(as_text=True)
    assert [i["entity_label"] for i in response.get_json()["items"]] == ["CO"]


@pytest.mark.parametrize(("params", "field"), [
    ({"since": "2031-01-01T10:30:00"}, "since"),
    ({"since": "2031-01-01"}, "since"),
    ({"since": "yesterday"}, "since"),
    ({"since": "2031-13-01T10:00:00Z"}, "since"),
    ({"until": "2031-01-01T10:30:00"}, "until"),
])
def test_audit_times_without_offset_or_invalid_are_422(client, users, params, field, auth):
    response = client.get(f"{API}/audit", query_string=params, headers=auth("auditor_network"))
    assert_error(response, 422, "invalid", field)


def test_audit_filters(client, users, dated_entries, auth):
    auditor = auth("auditor_network")
    pv, co = dated_entries
    by_entity = audit_items(client, auditor, entity="site", per_page=200)
    assert by_entity and {i["entity_type"] for i in by_entity} == {"site"}
    assert {"BG", "MZ", "PV", "CO"} <= {i["entity_label"] for i in by_entity}
    by_id = audit_items(client, auditor, entity="site", id=str(pv.id))
    assert [(i["action"], i["entity_label"]) for i in by_id] == [("create", "PV")]
    assert by_id[0]["changes"]["name"] == [None, "Site PV"]
    assert by_id[0]["actor"] == "admin.bg (Admin.Bg Tester)"
    by_label = audit_items(client, auditor, entity="app_user", id="technician.bg")
    assert by_label and {i["entity_label"] for i in by_label} == {"technician.bg"}
    by_user = audit_items(client, auditor, user="admin.bg", per_page=200)
    assert by_user and {i["actor"] for i in by_user} == {"admin.bg (Admin.Bg Tester)"}
    assert {"PV", "CO"} <= {i["entity_label"] for i in by_user}
    combined = audit_items(client, auditor, user="admin.bg", entity="site", since="2031-01-01T11:00:00+01:00")
    assert [i["entity_label"] for i in combined] == ["CO", "PV"]
    assert audit_items(client, auditor, user="nobody") == []
    assert audit_items(client, auditor, entity="site", id="no-such-id") == []
    assert [i["action"] for i in audit_items(client, auditor, action="access_denied")] == []


def test_audit_entries_serialised_with_chain(client, users, auth):
    items = audit_items(client, auth("auditor_network"), per_page=3)
    assert len(items) == 3
    seqs = [i["seq"] for i in items]
    assert seqs == sorted(seqs, reverse=True)
    assert items[0]["prev_hash"] == items[1]["entry_hash"]
    for item in items:
        assert re.fullmatch(r"[0-9a-f]{64}", item["entry_hash"])
        assert dt.datetime.fromisoformat(item["recorded_at"]).utcoffset() == dt.timedelta(0)


def test_audit_total_is_counted_up_to_a_limit_and_has_next_walks_everything(client, users, auth, monkeypatch):
    """The trail grows by millions: its total is counted up to COUNT_LIMIT. `total_exact` says whether `total` is
    exact or a lower bound, `has_next` whether to go on; walking the pages reaches every entry once."""
    from cellfactory.audit import queries

    monkeypatch.setattr(queries, "COUNT_LIMIT", 7)
    auditor = auth("auditor_network")
    everything = [e.seq for e in reversed(audit_rows())]
    assert len(everything) > 2 * 7
    seen, page = [], 1
    while True:
        body = client.get(f"{API}/audit", query_string={"per_page": 4, "page": page}, headers=auditor).get_json()
        seen += [item["seq"] for item in body["items"]]
        if not body["has_next"]:
            break
        assert body["total_exact"] is False and body["total"] > 7 and body["total"] >= page * 4 + 1
        page += 1
    assert seen == everything  # newest first, each once
    assert body["total_exact"] is True and body["total"] == len(everything)  # the last page knows
    past = client.get(f"{API}/audit", query_string={"per_page": 4, "page": page + 5}, headers=auditor).get_json()
    assert past["items"] == [] and past["has_next"] is False and past["total_exact"] is False and past["total"] == 8
    sites = client.get(f"{API}/audit", query_string={"entity": "site"}, headers=auditor).get_json()
    assert sites["total_exact"] is True and sites["total"] == len(sites["items"]) <= 7 and not sites["has_next"]
    described = client.get(f"{API}/openapi.json").get_json()["paths"]["/audit"]["get"]
    assert "lower bound" in described["description"]
    schema = described["responses"]["200"]["content"]["application/json"]["schema"]
    assert {"total", "total_exact", "has_next"} <= set(schema["required"])


def test_audit_readers_and_scope(client, users, dated_entries, auth):
    before = last_seq()
    assert_error(client.get(f"{API}/audit", headers=auth("technician")), 403, "forbidden")
    assert_error(client.get(f"{API}/audit", headers=auth("admin")), 403, "forbidden")
    assert [e.action for e in audit_rows() if e.seq > before] == ["access_denied", "access_denied"]
    # QA of BG sees only entries of BG; the network auditor sees every site's.
    bg_id = db.session.scalar(sa.select(Site.id).where(Site.code == "BG"))
    qa_items = audit_items(client, auth("qa"), per_page=200)
    assert qa_items and {i["site_id"] for i in qa_items} == {bg_id}
    network = audit_items(client, auth("auditor_network"), entity="site", per_page=200)
    assert {"MZ", "PV", "CO"} <= {i["entity_label"] for i in network}


# --- OpenAPI, health, routing errors ---------------------------------------------------------------


def api_routes(app) -> dict[str, set[str]]:
    routes: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(API + "/"):
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule[len(API):])
        routes.setdefault(path, set()).update(m.lower() for m in rule.methods - {"HEAD", "OPTIONS"})
    return routes


def test_openapi_is_public_and_lists_every_route(app, client):
    response = client.get(f"{API}/openapi.json")
    assert response.status_code == 200
    doc = response.get_json()
    assert doc["openapi"].startswith("3.")
    assert doc["servers"] == [{"url": API}]
    assert doc["components"]["securitySchemes"]["bearer"] == {"type": "http", "scheme": "bearer"}
    routes = api_routes(app)
    assert {"/me", "/sites", "/sites/{code}", "/users", "/audit", "/openapi.json"} <= set(routes)
    documented = {path: {m for m in item if m in {"get", "post", "put", "patch", "delete"}}
                  for path, item in doc["paths"].items()}
    assert documented == routes
    for path, item in doc["paths"].items():
        for name in re.findall(r"{(\w+)}", path):
            for operation in item.values():
                declared = [p for p in operation.get("parameters", []) if p["name"] == name and p["in"] == "path"]
                assert len(declared) == 1 and declared[0]["required"] is True, (path, name)
                assert declared[0]["schema"]["type"] == "string", (path, name)


def test_openapi_references_resolve(client):
    doc = client.get(f"{API}/openapi.json").get_json()
    schemas = doc["components"]["schemas"]
    refs = re.findall(r'"\$ref": "#/components/schemas/(\w+)"', str(doc).replace("'", '"'))
    assert refs and set(refs) <= set(schemas)
    for item in doc["paths"].values():
        for operation in item.values():
            assert operation["responses"] and operation["summary"]


def test_healthz_without_auth(client):
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "checks": {
        "database": "ok", "schema": "ok", "audit_key": "ok", "anchor_file": "ok", "instance_keys": "ok"}}
    assert response.headers["Cache-Control"] == "no-store"


def test_unknown_api_path_and_wrong_method_are_json(client, users, auth):
    headers = auth("admin")
    assert_error(client.get(f"{API}/nothing-here", headers=headers), 404, "not_found")
    assert_error(client.get(f"{API}/nothing-here"), 404, "not_found")
    assert_error(client.delete(f"{API}/sites", headers=headers), 405, "method_not_allowed")
    assert_error(client.put(f"{API}/me", headers=headers), 405, "method_not_allowed")


def test_wrong_method_names_the_allowed_ones(client, users, auth):
    """Issue 15: a 405 carries the Allow header (RFC 9110), on API addresses and pages alike."""
    headers = auth("admin")
    for method, path, allowed in (("delete", "/sites", {"GET", "POST"}), ("put", "/me", {"GET"}),
                                  ("post", "/batches/BG-UCMSC-2026-0001", {"GET"})):
        response = getattr(client, method)(f"{API}{path}", headers=headers)
        assert_error(response, 405, "method_not_allowed")
        assert {m.strip() for m in response.headers["Allow"].split(",")} == allowed | {"HEAD", "OPTIONS"}
    response = client.put("/healthz")
    assert response.status_code == 405
    assert "GET" in response.headers["Allow"]


def test_ids_beyond_64_bits_name_nothing(client, users, auth, login_as):
    """Issue 15: a record id longer than the databases hold was a server error on SQLite (the driver cannot bind it):
    in an address it is 404, in a body 422 naming the field."""
    huge = "9" * 25
    for path in (f"/lots/{huge}", f"/lots/{huge}/trace", f"/trace/lots/{huge}",
                 f"/products/UCMSC/specifications/{huge}"):
        assert_error(client.get(f"{API}{path}", headers=auth("qa")), 404, "not_found")
    assert_error(client.post(f"{API}/results/{huge}/final-read", json={"value": 1}, headers=auth("qc_analyst")),
                 404, "not_found")
    login_as("admin")
    assert client.get(f"/admin/users/{huge}").status_code == 404


def test_whole_numbers_in_a_body():
    """A whole number may be written 7.0 (JSON Schema's integer); beyond 64 bits it is refused, naming the field."""
    data = {"count": 7.0, "rows": 2, "version": 10**25}
    with pytest.raises(ValidationFailed) as refused:
        check_types(data, integers=("count", "rows", "version"))
    assert set(refused.value.fields) == {"version"}
    assert data["count"] == 7 and isinstance(data["count"], int)
    # A fraction where a whole number belongs is the command's to refuse, in the words it gives the page's same
    # text (tests/test_commands_products.py: shelf_life_cryo_days 12.5; tests/test_api_manufacturing.py:
    # max_passage 4.5); a flag sent as a number is refused here.
    with pytest.raises(ValidationFailed) as refused:
        check_types({"count": 7.5, "flag": 1.0}, integers=("count",), flags=("flag",))
    assert set(refused.value.fields) == {"flag"}


def test_api_responses_carry_security_headers(client, users, auth):
    response = client.get(f"{API}/me", headers=auth("technician"))
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
    assert "Set-Cookie" not in response.headers


def test_api_writes_need_no_csrf_token_but_pages_do(tmp_path):
    """With CSRF protection on, a bearer-token POST is accepted and a page POST without a token is not."""
    with fresh_database() as url:
        csrf_app = create_app(make_config(url, tmp_path))
        assert csrf_app.config["WTF_CSRF_ENABLED"] is not False
        try:
            with csrf_app.app_context():
                from cellfactory.sites import services as site_services

                site_services.create_site(None, CreateSite(code="BG", name="Bergamo", facility_id="A9991",
                                                           timezone="Europe/Rome"))
                admin = make_user("admin.bg", [(Role.ADMIN, "BG")])
                token = new_token(admin)
            client = csrf_app.test_client()
            response = client.post(f"{API}/sites", json=NEW_SITE, headers=bearer(token))
            assert response.status_code == 201, response.get_data(as_text=True)
            page = client.post("/auth/login", data={"username": "admin.bg", "password": PASSWORD})
            assert page.status_code == 400
        finally:
            with csrf_app.app_context():
                db.session.remove()
                db.engine.dispose()


def test_token_records_when_it_was_last_used(client, users):
    raw = auth_services.create_token(None, refetch(users["technician"]), "instrument")
    assert client.get("/api/v1/me", headers={"Authorization": f"Bearer {raw}"}).status_code == 200
    token = db.session.scalar(sa.select(ApiToken).where(ApiToken.prefix == raw[:10]))
    assert token.last_used_at is not None


def test_token_of_a_user_who_must_change_the_password_is_refused(client, sites):
    user = make_user("newcomer", [(Role.TECHNICIAN, "BG")], must_change_password=True)
    raw = auth_services.create_token(None, user, "instrument")
    response = client.get("/api/v1/me", headers={"Authorization": f"Bearer {raw}"})
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "password_change_required"

"""Default-deny: every route refuses an anonymous user and a user without the role it declares."""

from __future__ import annotations

import pytest
from flask import Flask

from cellfactory.auth.models import Role
from cellfactory.core.permissions import ANY_ROLE
from tests.conftest import login

# A user for each role set: the first one holding none of the allowed roles is used.
PROBES = ["technician", "qc_analyst", "qa", "qp", "auditor", "admin"]


def _routes(app: Flask):
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        args = {name: 999_999 if type(conv).__name__ in ("IntegerConverter", "FloatConverter") else "XX"
                for name, conv in rule._converters.items()}
        url = rule.build(args, append_unknown=False)[1]
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule.endpoint, method, url


def test_every_view_declares_who_may_open_it(app):
    undeclared = []
    for endpoint, view in app.view_functions.items():
        if endpoint == "static" or getattr(view, "public", False) or endpoint == "api.openapi":
            continue
        if not getattr(view, "allowed_roles", None):
            undeclared.append(endpoint)
    assert undeclared == [], f"views without a role declaration (refused to everyone): {undeclared}"


def test_anonymous_is_refused_everywhere(app, client):
    checked = 0
    for endpoint, method, url in _routes(app):
        view = app.view_functions[endpoint]
        if getattr(view, "public", False) or endpoint == "api.openapi":
            continue
        response = client.open(url, method=method)
        if url.startswith("/api/"):
            assert response.status_code == 401, (endpoint, method, url, response.status_code)
            assert response.get_json()["error"]["code"] == "unauthenticated"
        else:
            assert response.status_code == 302, (endpoint, method, url, response.status_code)
            assert "/auth/login" in response.headers["Location"], (endpoint, url)
        checked += 1
    assert checked > 20


@pytest.mark.parametrize("probe_role", PROBES)
def test_users_without_the_role_are_refused(app, client, users, probe_role):
    user = users[probe_role]
    assert login(client, user.username).status_code == 302
    refused = 0
    for endpoint, method, url in _routes(app):
        if url.startswith("/api/") or endpoint in ("auth.logout",):
            continue
        view = app.view_functions[endpoint]
        allowed = getattr(view, "allowed_roles", None)
        if getattr(view, "public", False) or allowed == ANY_ROLE:
            continue
        if Role(probe_role) in allowed:
            continue
        response = client.open(url, method=method)
        assert response.status_code == 403, (probe_role, endpoint, method, url, response.status_code)
        refused += 1
    if probe_role != "admin":
        assert refused > 0


def test_refusal_is_audited(client, users):
    import sqlalchemy as sa

    from cellfactory.audit.models import AuditEntry
    from cellfactory.extensions import db

    login(client, "technician.bg")
    assert client.get("/admin/users").status_code == 403
    entry = db.session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "access_denied")
                               .order_by(AuditEntry.seq.desc())).first()
    assert entry is not None
    assert entry.actor_name.startswith("technician.bg")
    assert entry.changes["attempted"] == "admin.users"

"""Each cross-cutting rule lives in one place in `cellfactory.core`: these tests read the package source and fail
when a copy of one appears elsewhere."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import cellfactory
from cellfactory.auth.models import Role
from cellfactory.core import permissions

PACKAGE = Path(cellfactory.__file__).resolve().parent


def modules(*, skip: tuple[str, ...] = ()) -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        name = path.relative_to(PACKAGE).as_posix()
        if not name.startswith(skip):
            yield name, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _roles_in(node: ast.AST) -> list[str]:
    """The `Role.X` members of a set literal, `frozenset({...})`, or the arguments of `roles_required(...)`."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "frozenset" and node.args:
        node = node.args[0]
    if not isinstance(node, ast.Set | ast.Tuple | ast.List):
        return []
    return [e.attr for e in node.elts
            if isinstance(e, ast.Attribute) and isinstance(e.value, ast.Name) and e.value.id == "Role"]


def role_sets_outside_permissions() -> list[str]:
    found = []
    # The demo lists the people it creates (a user per role and site) and checks them; it grants no access.
    for name, tree in modules(skip=("core/permissions.py", "migrations/", "demo")):
        for node in ast.walk(tree):
            where = f"{name}:{getattr(node, 'lineno', '?')}"
            # A module-level name for a set of roles: it belongs in core/permissions.py.
            if isinstance(node, ast.Assign) and node in tree.body and len(_roles_in(node.value)) >= 2:
                found.append(f"{where} defines {ast.unparse(node.targets[0])}")
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name | ast.Attribute):
                called = node.func.id if isinstance(node.func, ast.Name) else node.func.attr
                if called == "roles_required" and len(_roles_in(ast.Tuple(elts=node.args))) >= 2:
                    found.append(f"{where} lists roles in roles_required(...)")
                if called == "has_any_role" and node.args and len(_roles_in(node.args[0])) >= 2:
                    found.append(f"{where} lists roles in has_any_role(...)")
    return found


def test_role_sets_are_named_once_in_core_permissions():
    assert role_sets_outside_permissions() == [], (
        "Name the set of roles in cellfactory/core/permissions.py (or use one defined there) and import it.")


def test_the_guard_sees_a_role_set_written_elsewhere():
    tree = ast.parse("STAFF = frozenset({Role.TECHNICIAN, Role.QA})\n"
                     "@roles_required(Role.QA, Role.QP)\ndef view(): ...\n"
                     "allowed = user.has_any_role({Role.TECHNICIAN, Role.QA}, site_id)\n")
    assert len(_roles_in(tree.body[0].value)) == 2
    assert len(_roles_in(ast.Tuple(elts=tree.body[1].decorator_list[0].args))) == 2
    assert len(_roles_in(tree.body[2].value.args[0])) == 2


def test_named_role_sets_keep_their_members():
    """The rules as they stood when each set had copies in several modules."""
    R = Role
    expected = {
        "MANUFACTURING_STAFF": {R.TECHNICIAN, R.QA},
        "SITE_STAFF": {R.TECHNICIAN, R.QC_ANALYST, R.QA, R.QP},
        "SIGNING_ROLES": {R.QA, R.QP},
        "GRANT_APPROVERS": {R.ADMIN, R.QA, R.QP},
        "NETWORK_ROLES": {R.AUDITOR, R.QA, R.ADMIN},
        "READ_ROLES": {R.TECHNICIAN, R.QC_ANALYST, R.QA, R.QP, R.AUDITOR},
        "AUDIT_READERS": {R.QA, R.QP, R.AUDITOR},
        "USER_READERS": {R.ADMIN, R.QA, R.AUDITOR},
        "ALERT_READERS": {R.ADMIN, R.QA, R.QP},
    }
    assert {name: getattr(permissions, name) for name in expected} == expected


# Where a commit outside core/transaction.py is right, and why.
COMMITS_ALLOWED = {
    # Planner statistics (ANALYZE / PRAGMA optimize) on an engine connection of its own, outside the ORM session:
    # a maintenance statement that writes no record, so no service call and no request is involved.
    ("cli.py", "maintenance_command"),
}


def commits_outside_transaction_layer(trees: list[tuple[str, ast.Module]]) -> list[str]:
    found = []
    for name, tree in trees:
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "commit" \
                        and (name, function.name) not in COMMITS_ALLOWED:
                    found.append(f"{name}:{node.lineno} {ast.unparse(node.func)}() in {function.name}")
        for node in tree.body:  # commits at module level, outside any function
            for call in ast.walk(node):
                if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) \
                        and isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute) \
                        and call.func.attr == "commit":
                    found.append(f"{name}:{call.lineno} {ast.unparse(call.func)}() at module level")
    return sorted(set(found))


def test_only_the_transaction_layer_commits():
    """Services are @transactional, bookkeeping outside a service uses commit_soon: a commit anywhere else would end
    a request's transaction early, and an error response could then follow saved work."""
    trees = list(modules(skip=("core/transaction.py",)))
    assert commits_outside_transaction_layer(trees) == []


def test_the_commit_guard_sees_a_commit():
    tree = ast.parse("def certificate_pdf(actor):\n    db.session.commit()\n"
                     "def maintenance_command():\n    connection.commit()\n")
    assert commits_outside_transaction_layer([("releases/services.py", tree), ("cli.py", tree)]) == [
        "cli.py:2 db.session.commit() in certificate_pdf",
        "releases/services.py:2 db.session.commit() in certificate_pdf",
        "releases/services.py:4 connection.commit() in maintenance_command",
    ]


TEMPLATES = PACKAGE.parent / "templates"


def templates_containing(text: str) -> list[str]:
    return sorted(path.relative_to(TEMPLATES).as_posix() for path in TEMPLATES.rglob("*.html")
                  if text in path.read_text(encoding="utf-8"))


def test_the_site_filter_and_the_history_card_are_written_once():
    """Lists take their site choice from `site_filter`, record pages their audit trail from `history_card`."""
    assert templates_containing('name="site"><option value="">') == ["_macros/filters.html"]
    assert templates_containing('id="history"') == ["_macros/records.html"]

"""The API against its own OpenAPI document (issue 15): every operation fuzzed by schemathesis, with every check.

The demo network is built once for the module, on its own database (SQLite or PostgreSQL, as the suite runs), and
one user of each role gets a token of the broadest scope the role allows. Each operation is fuzzed as one of the
roles that may call it (the other roles only ever see the 403 every operation documents): schemathesis sends the
document's examples, its boundary and negative cases (coverage phase, unexpected methods included) and a bounded
number of generated requests (fuzzing phase), from a fixed seed, and checks every answer: no server error; the
documented status codes, content type, headers and body schema; schema-valid requests accepted, or refused only
for a reason the document states; invalid ones refused; an `Allow` header on every 405; authentication not ignored.

The app is served by a real HTTP server in a process of its own, so that the server and the fuzzer each have a
core. Writes land in the test's own database.
"""

from __future__ import annotations

import multiprocessing
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
import sqlalchemy as sa
from flask import Flask
from schemathesis import checks as st_checks
from schemathesis import engine
from schemathesis.engine import events
from werkzeug.serving import WSGIRequestHandler, make_server

from cellfactory import create_app
from cellfactory.api import bp as api_bp
from cellfactory.auth.models import Role, User
from cellfactory.auth.services import create_token
from cellfactory.demo import load_demo
from cellfactory.extensions import db
from tests.conftest import fresh_database, make_config

PASSWORD = "Demo-Fuzz-Password-2026"
# One user of each role, all at Bergamo, the demo's first site, whose records are in every state.
FUZZED_USERS = {role.value: f"{role.value}.bg" for role in Role}
SEED = 20260415
# Generated requests per operation in the fuzzing phase, after the examples and the coverage phase's cases.
MAX_EXAMPLES = 6
# The fuzzer signs with wrong passwords all the time; lock-out (tested in test_auth) would end its tokens.
NO_LOCKOUT = {"lockout_threshold": 1_000_000}


def app_for(url: str, instance: Path) -> Flask:
    return create_app(make_config(url, instance, **NO_LOCKOUT))


class QuietHandler(WSGIRequestHandler):
    """The fuzzer's thousands of requests are not logged; a failure is reported with the request that failed."""

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


def serve(url: str, instance: str, ready: Any) -> None:
    """The server process: the app on a free loopback port, which it reports through `ready`."""
    server = make_server("127.0.0.1", 0, app_for(url, Path(instance)), request_handler=QuietHandler)
    ready.put(server.server_port)
    server.serve_forever()


def operation_roles(app: Flask) -> dict[str, frozenset[str]]:
    """{"GET /batches/{number}": roles that may call it} for every API route, from the views' declarations."""
    prefix = api_bp.url_prefix
    roles: dict[str, frozenset[str]] = {}
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("api."):
            continue
        view = app.view_functions[rule.endpoint]
        allowed = frozenset(str(role) for role in getattr(view, "allowed_roles", ()) or ())
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule[len(prefix):])
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            roles[f"{method} {path}"] = allowed if not getattr(view, "public", False) else frozenset(FUZZED_USERS)
    return roles


def assign_roles(roles: dict[str, frozenset[str]]) -> dict[str, str]:
    """Each operation to one role that may call it, spreading the operations evenly over the roles."""
    load = dict.fromkeys(sorted(FUZZED_USERS), 0)
    assigned = {}
    for label, allowed in sorted(roles.items(), key=lambda item: (len(item[1]), item[0])):
        role = min(sorted(allowed & set(load)), key=lambda name: load[name])
        assigned[label] = role
        load[role] += 1
    return assigned


@pytest.fixture(scope="module")
def demo_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str], dict[str, str]]]:
    """The demo network served on a database of its own: (base URL, token per role, role per operation)."""
    instance = tmp_path_factory.mktemp("fuzz-instance")
    with fresh_database() as url:
        app = app_for(url, instance)
        with app.app_context():
            load_demo(PASSWORD)
            tokens = {}
            for role, username in FUZZED_USERS.items():
                user = db.session.scalar(sa.select(User).where(User.username == username))
                tokens[role] = create_token(None, user, f"fuzz {role}")
            db.session.remove()
        assigned = assign_roles(operation_roles(app))
        db.state(app).engine.dispose()
        context = multiprocessing.get_context("spawn")
        ready = context.Queue()
        server = context.Process(target=serve, args=(url, str(instance), ready), daemon=True)
        server.start()
        try:
            port = ready.get(timeout=120)
            yield f"http://127.0.0.1:{port}", tokens, assigned
        finally:
            server.terminate()
            server.join(30)


def fuzz_config(token: str) -> schemathesis.Config:
    return schemathesis.Config.from_dict({
        "seed": SEED,
        "headers": {"Authorization": f"Bearer {token}"},
        "continue-on-failure": True,
        "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True, "database": "none",
                       "no-shrink": True},
        # The document declares no links between operations, which the stateful phase would follow.
        "phases": {"stateful": {"enabled": False}},
        # Replaced by positive_data_acceptance_as_documented, which also takes the refusals the document states.
        "checks": {"enabled": True, "positive_data_acceptance": {"enabled": False}},
    })


def _documented_refusal(case, response) -> bool:
    """A 422 whose error names only fields that the document marks `x-refused-when`: values the schema cannot
    judge (an unknown site code, a date that must lie ahead) and that the server checks against its records."""
    if response.status_code != 422:
        return False
    try:
        fields = response.json()["error"]["fields"]
    except (ValueError, KeyError, TypeError):
        return False
    operation, document = case.operation.definition.raw, case.operation.schema.raw_schema
    parameters = {p["name"]: p.get("schema", {}) for p in operation.get("parameters", ())}
    body = operation.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})

    def stated(name: str) -> bool:
        """Whether the field (a parameter, or a path into the body such as `tests[3].code`) is marked."""
        segments = [part for part in re.split(r"[.\[\]]", name) if part]
        if segments and segments[0] in parameters:
            return "x-refused-when" in parameters[segments[0]]
        return _marked(body, segments, document)

    return bool(fields) and all(stated(name) for name in fields)


def _marked(schema: Any, segments: list[str], document: dict[str, Any]) -> bool:
    """Whether a body path reaches a schema marked `x-refused-when` (a named property, an item, or an unknown field
    of an object that marks its additional properties) before it ends."""
    if not isinstance(schema, dict):
        return False
    if "$ref" in schema:
        return _marked(document["components"]["schemas"][schema["$ref"].rpartition("/")[2]], segments, document)
    if "x-refused-when" in schema:
        return True
    if any(_marked(part, segments, document) for part in schema.get("allOf", ())):
        return True
    if not segments:
        return False
    head, rest = segments[0], segments[1:]
    if head.isdigit() and "items" in schema:
        return _marked(schema["items"], rest, document)
    properties = schema.get("properties", {})
    if head in properties:
        return _marked(properties[head], rest, document)
    declared = any(head in part.get("properties", {}) for part in _parts(schema, document))
    extra = schema.get("additionalProperties")
    return not declared and isinstance(extra, dict) and "x-refused-when" in extra


def _parts(schema: dict[str, Any], document: dict[str, Any]) -> list[dict[str, Any]]:
    parts = []
    for part in schema.get("allOf", ()):
        if "$ref" in part:
            part = document["components"]["schemas"][part["$ref"].rpartition("/")[2]]
        parts.append(part)
    return parts


@schemathesis.check
def positive_data_acceptance_as_documented(ctx, response, case):
    """Schemathesis's positive_data_acceptance, except for a refusal the document states (see _documented_refusal)."""
    try:
        return st_checks.positive_data_acceptance(ctx, response, case)
    except AssertionError:
        if _documented_refusal(case, response):
            return None
        raise


def fuzz(schema, timings: dict[str, float] | None = None) -> tuple[dict[tuple[str, str], str], int]:
    """Run the phases over the schema's operations: ({(operation, problem): an example}, requests sent)."""
    problems: dict[tuple[str, str], str] = {}
    sent = 0
    for event in engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            sent += len(event.recorder.interactions)
            if timings is not None and event.label:
                timings[event.label] = timings.get(event.label, 0) + event.elapsed_time
            for case_id, checks in event.recorder.checks.items():
                for check in checks:
                    info = check.failure_info
                    if info is not None:
                        failure = info.failure
                        interaction = event.recorder.interactions.get(case_id)
                        answer = interaction.response if interaction is not None else None
                        body = answer.content[:500].decode(errors="replace") if answer is not None and answer.content \
                            else ""
                        problems.setdefault((failure.operation or event.label or "?", f"{check.name}: {failure.title}"),
                                            f"{failure.message}\n{info.code_sample}\n-> {body}")
        elif isinstance(event, events.NonFatalError):
            problems.setdefault((event.label, f"error: {type(event.value).__name__}"),
                                f"{event.value}\n{event.info.code_sample or ''}")
        elif isinstance(event, events.FatalError):
            raise event.exception
    return problems, sent


def role_schema(base_url: str, tokens: dict[str, str], assigned: dict[str, str], role: str):
    schema = schemathesis.openapi.from_url(f"{base_url}/api/v1/openapi.json", config=fuzz_config(tokens[role]))

    def assigned_to_role(context) -> bool:
        return assigned[f"{context.operation.method.upper()} {context.operation.path}"] == role

    return schema.include(assigned_to_role)


@pytest.mark.parametrize("role", sorted(FUZZED_USERS))
def test_api_answers_as_documented(demo_api, role):
    base_url, tokens, assigned = demo_api
    problems, sent = fuzz(role_schema(base_url, tokens, assigned, role))
    assert sent > 0
    report = "\n\n".join(f"{operation} -- {problem}\n{example}"
                         for (operation, problem), example in sorted(problems.items()))
    assert not problems, f"{len(problems)} problems as {role}:\n\n{report}"


def test_every_operation_is_fuzzed_as_a_role_that_may_call_it(demo_api):
    base_url, _, assigned = demo_api
    import json
    import urllib.request

    with urllib.request.urlopen(f"{base_url}/api/v1/openapi.json") as answer:  # noqa: S310 - the test's own server
        paths = json.load(answer)["paths"]
    documented = {f"{method.upper()} {path}" for path, item in paths.items() for method in item}
    assert documented == set(assigned)

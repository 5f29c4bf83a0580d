"""The `cellfactory` command line (also `flask --app wsgi ...`)."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from flask import Flask, current_app
from flask.cli import FlaskGroup, with_appcontext

from cellfactory.core.errors import DomainError


def _make_app() -> Flask:
    from cellfactory import create_app

    return create_app()


@click.group(cls=FlaskGroup, create_app=_make_app, add_version_option=False)
def cli() -> None:
    """cellfactory: GMP batch and release management."""


def _fail(error: DomainError) -> None:
    click.echo(f"Error: {error.message}", err=True)
    for field, message in error.fields.items():
        click.echo(f"  {field}: {message}", err=True)
    sys.exit(2)


@click.group("db")
def db_group() -> None:
    """Database schema."""


@db_group.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@with_appcontext
def db_upgrade(revision: str) -> None:
    """Create or migrate the schema of the database in DATABASE_URL."""
    from cellfactory.migrations import upgrade

    upgrade(current_app.config["CELLFACTORY"].database_url, revision)
    click.echo(f"Database at revision {revision}.")


@click.command("demo")
@click.option("--password", default=None, help="Password for every demo user (default: printed).")
@with_appcontext
def demo_command(password: str | None) -> None:
    """Load the demo network (migrating the schema first) and print the logins."""
    from cellfactory.demo import DEMO_PASSWORD, load_demo
    from cellfactory.migrations import upgrade

    upgrade(current_app.config["CELLFACTORY"].database_url)
    try:
        summary = load_demo(password or DEMO_PASSWORD)
    except DomainError as error:
        _fail(error)
    click.echo(summary)


@click.group("user")
def user_group() -> None:
    """Users."""


@user_group.command("create")
@click.option("--username", required=True)
@click.option("--name", "full_name", required=True, help="Printed full name, as used in signatures.")
@click.option("--email", required=True)
@click.option("--role", "roles", required=True, multiple=True,
              type=click.Choice(["technician", "qc_analyst", "qa", "qp", "auditor", "admin"]))
@click.option("--site", default=None, help="Site code; omit for a network-wide auditor or QA.")
@click.option("--password-stdin", is_flag=True, help="Read the temporary password from standard input.")
@with_appcontext
def user_create(username: str, full_name: str, email: str, roles: tuple[str, ...], site: str | None,
                password_stdin: bool) -> None:
    """Create a user with a temporary password (changed at first log-in)."""
    from cellfactory.auth.models import Role
    from cellfactory.auth.services import create_user

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Temporary password", hide_input=True, confirmation_prompt=True)
    try:
        user = create_user(None, username=username, full_name=full_name, email=email,
                           roles=[(Role(r), site) for r in roles], temporary_password=password)
    except DomainError as error:
        _fail(error)
    click.echo(f"Created {user.username} ({user.full_name}); the password must be changed at first log-in.")


@click.group("audit")
def audit_group() -> None:
    """The audit trail."""


@audit_group.command("verify")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="Processes checking ranges of the chain at once (default: one per CPU for 100,000 entries "
                   "or more, else 1).")
@with_appcontext
def audit_verify(workers: int | None) -> None:
    """Check the whole hash chain: exit 0 with the count, or 1 naming the first broken entry."""
    from cellfactory.audit.services import verify_chain
    from cellfactory.extensions import db

    with db.engine.connect() as connection:
        report = verify_chain(connection, workers=workers)
    if report.intact:
        click.echo(f"Audit trail intact: {report.checked} entries verified.")
        return
    click.echo(f"Audit trail BROKEN at entry {report.broken_seq}: {report.problem}. "
               f"{report.checked} entries before it are intact.", err=True)
    sys.exit(1)


@click.group("token")
def token_group() -> None:
    """API tokens."""


@token_group.command("create")
@click.argument("username")
@click.option("--name", default="command line", help="What the token is for.")
@click.option("--scope", type=click.Choice(["read", "write", "sign"]), default=None,
              help="read, write or sign (default: the broadest the user's roles allow).")
@with_appcontext
def token_create(username: str, name: str, scope: str | None) -> None:
    """Create an API token for USERNAME; the token alone is the last line (shown once)."""
    from cellfactory.auth.services import create_token, get_user

    try:
        token = create_token(None, get_user(username), name, scope)
    except DomainError as error:
        _fail(error)
    click.echo(f"API token for {username} (shown once, store it safely):")
    click.echo(token)


@click.command("backup")
@click.argument("path", type=click.Path(path_type=Path))
@with_appcontext
def backup_command(path: Path) -> None:
    """A complete copy of the database and its audit anchors into the new folder PATH."""
    from cellfactory import backup

    config = current_app.config["CELLFACTORY"]
    try:
        report = backup.backup(config.database_url, path, anchor_file=_anchor_file(config))
    except backup.BackupError as error:
        click.echo(f"Error: {error}", err=True)
        sys.exit(1)
    click.echo(f"Backup written to {report.path}: schema {report.revision}, "
               f"{sum(report.counts.values())} rows in {len(report.counts)} tables.")


@click.command("restore")
@click.argument("path", type=click.Path(path_type=Path, exists=True, file_okay=False))
@with_appcontext
def restore_command(path: Path) -> None:
    """Restore the backup in PATH into the empty database of DATABASE_URL, then check it."""
    from cellfactory import backup
    from cellfactory.audit.services import verify_chain
    from cellfactory.extensions import db

    config = current_app.config["CELLFACTORY"]
    try:
        report = backup.restore(config.database_url, path, anchor_file=_anchor_file(config))
    except backup.BackupError as error:
        click.echo(f"Error: {error}", err=True)
        sys.exit(1)
    db.engine.dispose()
    with db.engine.connect() as connection:
        chain = verify_chain(connection)
    if not chain.intact:
        click.echo(f"Restored, but the audit trail is BROKEN at entry {chain.broken_seq}: {chain.problem}.",
                   err=True)
        sys.exit(1)
    click.echo(f"Restored {sum(report.counts.values())} rows in {len(report.counts)} tables (schema "
               f"{report.revision}); the audit trail is intact ({chain.checked} entries).")


def _anchor_file(config) -> Path | None:
    anchor = getattr(config, "anchor_file", None)
    return Path(anchor) if anchor else None


@click.group("collection-facility")
def collection_facility_group() -> None:
    """Collection facilities registered for a site: the site receives DINs that carry their FIN."""


@collection_facility_group.command("add")
@click.argument("site_code")
@click.argument("facility_id")
@click.option("--name", required=True, help="The collection facility's name.")
@with_appcontext
def collection_facility_add(site_code: str, facility_id: str, name: str) -> None:
    """Register FACILITY_ID (the FIN, 5 characters) as a collection facility of SITE_CODE (audited)."""
    from cellfactory.materials.services import register_collection_facility
    from cellfactory.sites.services import get_site

    try:
        facility = register_collection_facility(None, get_site(site_code.upper()), facility_id=facility_id,
                                                name=name)
    except DomainError as error:
        _fail(error)
    click.echo(f"{facility.facility_id} ({facility.name}) registered for {site_code.upper()}.")


@collection_facility_group.command("list")
@click.argument("site_code")
@with_appcontext
def collection_facility_list(site_code: str) -> None:
    """The FINs SITE_CODE receives: its own and its collection facilities' (retired ones marked)."""
    from cellfactory.materials.services import collection_facilities
    from cellfactory.sites.services import get_site

    try:
        site = get_site(site_code.upper())
    except DomainError as error:
        _fail(error)
    click.echo(f"{site.facility_id}  {site.name} (the site's own FIN)")
    for facility in collection_facilities(site, active_only=False):
        state = "" if facility.active else f"  RETIRED {facility.retired_at:%Y-%m-%d}: {facility.retire_reason}"
        click.echo(f"{facility.facility_id}  {facility.name}{state}")


@collection_facility_group.command("retire")
@click.argument("site_code")
@click.argument("facility_id")
@click.option("--reason", required=True, help="Why the site no longer receives DINs of this FIN.")
@with_appcontext
def collection_facility_retire(site_code: str, facility_id: str, reason: str) -> None:
    """Stop receiving DINs of FACILITY_ID at SITE_CODE; the entry stays with the reason (audited)."""
    from cellfactory.core.errors import NotFound
    from cellfactory.materials.services import collection_facilities, retire_collection_facility
    from cellfactory.sites.services import get_site

    try:
        site = get_site(site_code.upper())
        found = [f for f in collection_facilities(site) if f.facility_id == facility_id.strip().upper()]
        if not found:
            raise NotFound(f"{facility_id.upper()} is not an active collection facility of {site.code}.")
        retire_collection_facility(None, found[0], reason)
    except DomainError as error:
        _fail(error)
    click.echo(f"{facility_id.upper()} retired for {site.code}.")


def register_commands(app: Flask) -> None:
    for command in (db_group, demo_command, user_group, audit_group, token_group, collection_facility_group,
                    backup_command, restore_command):
        app.cli.add_command(command)

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
    _after_upgrade()
    click.echo(f"Database at revision {revision}.")


def _after_upgrade() -> None:
    """What the migrations cannot do without the app's audit key: once, the seal of a chain written before
    keyed hashing (migration 0018 recorded its head). Exit 1, sealing nothing, if that old chain is broken."""
    import sqlalchemy as sa

    from cellfactory.audit import anchors
    from cellfactory.audit.services import ChainBroken, seal_legacy_chain
    from cellfactory.extensions import db

    config = current_app.config["CELLFACTORY"]
    try:
        with db.engine.begin() as connection:
            if not sa.inspect(connection).has_table("audit_chain_seal"):  # below revision 0018
                return
            sealed = seal_legacy_chain(connection, config.audit_key.encode())
    except ChainBroken as error:
        click.echo(f"The audit trail written before this upgrade is BROKEN at entry {error.report.broken_seq}: "
                   f"{error.report.problem}. It was not sealed under the audit key: investigate, and restore the "
                   "database from a backup taken before the break.", err=True)
        sys.exit(1)
    if sealed is not None:
        with db.engine.connect() as connection:
            anchors.anchor_current_head(connection, config.anchor_path, config.audit_key.encode())
        click.echo(f"Audit trail up to entry {sealed} checked and sealed under the audit key.")


@db_group.command("grant-runtime")
@click.argument("role")
@with_appcontext
def db_grant_runtime(role: str) -> None:
    """PostgreSQL, run as the owner: give ROLE (the app servers' role) what the app needs and nothing more."""
    from cellfactory.audit.protection import GrantRefused, grant_runtime
    from cellfactory.extensions import db

    try:
        with db.engine.begin() as connection:
            statements = grant_runtime(connection, role)
    except GrantRefused as error:
        click.echo(f"Error: {error}", err=True)
        sys.exit(2)
    click.echo(f"Granted {role} the runtime privileges ({len(statements)} statements): no table owned; audit "
               "trail, signatures and certificates SELECT and INSERT only. Run this again after every "
               "`cellfactory db upgrade`.")


@click.command("demo")
@click.option("--password", default=None, help="Password for every demo user (default: printed).")
@with_appcontext
def demo_command(password: str | None) -> None:
    """Load the demo network (migrating the schema first) and print the logins; says what it does as it goes, and
    changes nothing when the demo is already loaded."""
    from cellfactory.demo import DEMO_PASSWORD, load_demo
    from cellfactory.migrations import upgrade

    click.echo("Migrating the schema to the latest revision")
    upgrade(current_app.config["CELLFACTORY"].database_url)
    _after_upgrade()
    try:
        summary = load_demo(password or DEMO_PASSWORD, progress=click.echo)
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
    from cellfactory.auth.commands import CreateUser
    from cellfactory.auth.services import register_user

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Temporary password", hide_input=True, confirmation_prompt=True)
    try:
        user = register_user(None, CreateUser.parse({
            "username": username, "full_name": full_name, "email": email, "password": password,
            "roles": [{"role": role, "site": site} for role in roles]}))
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
    """Check the whole hash chain and its anchors: exit 0 with the count, or 1 naming the first break."""
    if not _check_trail(workers):
        sys.exit(1)


def _check_trail(workers: int | None) -> bool:
    """The chain, then every anchor; prints the outcome and says whether all is intact."""
    from cellfactory.audit.anchors import check_anchors
    from cellfactory.audit.services import verify_chain
    from cellfactory.extensions import db

    config = current_app.config["CELLFACTORY"]
    key = config.audit_key.encode()
    with db.engine.connect() as connection:
        report = verify_chain(connection, key=key, workers=workers)
        anchors = check_anchors(connection, config.anchor_path, key) if report.intact else None
    if not report.intact:
        click.echo(f"Audit trail BROKEN at entry {report.broken_seq}: {report.problem}. "
                   f"{report.checked} entries before it are intact.", err=True)
        return False
    assert anchors is not None
    if not anchors.intact:
        click.echo(f"Audit trail BROKEN at {anchors.describe()} in {config.anchor_path}: {anchors.problem}. "
                   f"The chain itself holds {report.checked} entries; {anchors.checked} anchors before it "
                   "match.", err=True)
        return False
    click.echo(f"Audit trail intact: {report.checked} entries verified.")
    if anchors.last is None:
        click.echo(f"No anchor yet in {config.anchor_path}.")
    else:
        click.echo(f"Last anchor checked: entry {anchors.last['seq']}, written {anchors.last['time']} "
                   f"({anchors.checked} anchors in {config.anchor_path}).")
    return True


@click.command("maintenance")
@with_appcontext
def maintenance_command() -> None:
    """Planner statistics, the audit chain and anchor check, then a new anchor; exit 1 if the trail is broken."""
    from cellfactory.audit.anchors import anchor_current_head
    from cellfactory.extensions import db

    config = current_app.config["CELLFACTORY"]
    with db.engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            connection.exec_driver_sql("PRAGMA optimize")
        else:
            connection.exec_driver_sql("ANALYZE")
        connection.commit()
    click.echo("Planner statistics updated (" + ("PRAGMA optimize" if db.dialect == "sqlite" else "ANALYZE") + ").")
    if not _check_trail(None):
        click.echo("No anchor written: the trail is broken.", err=True)
        sys.exit(1)
    with db.engine.connect() as connection:
        anchor = anchor_current_head(connection, config.anchor_path, config.audit_key.encode())
    if anchor is None:
        click.echo("No anchor written: the audit trail is empty.")
    else:
        click.echo(f"Anchor written: entry {anchor['seq']} at {anchor['time']}.")


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
        report = backup.backup(config.database_url, path, anchor_file=config.anchor_path)
    except backup.BackupError as error:
        click.echo(f"Error: {error}", err=True)
        sys.exit(1)
    click.echo(f"Backup written to {report.path}: schema {report.revision}, "
               f"{sum(report.counts.values())} rows in {len(report.counts)} tables.")


@click.command("restore")
@click.argument("path", type=click.Path(path_type=Path, exists=True, file_okay=False))
@with_appcontext
def restore_command(path: Path) -> None:
    """Restore the backup in PATH into the empty database of DATABASE_URL, then check it as `audit verify` does."""
    from cellfactory import backup
    from cellfactory.extensions import db

    config = current_app.config["CELLFACTORY"]
    try:
        report = backup.restore(config.database_url, path, anchor_file=config.anchor_path)
    except backup.BackupError as error:
        click.echo(f"Error: {error}", err=True)
        sys.exit(1)
    db.engine.dispose()
    click.echo(f"Restored {sum(report.counts.values())} rows in {len(report.counts)} tables (schema "
               f"{report.revision}).")
    if not _check_trail(None):
        sys.exit(1)


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


@click.group("alerts")
def alerts_group() -> None:
    """Alerts by e-mail (when SMTP is configured)."""


@alerts_group.command("send-overdue")
@with_appcontext
def alerts_send_overdue() -> None:
    """Alert the QC analysts and QA of the site to every final read now overdue, once per read (run it from cron,
    e.g. hourly), then send again the alert e-mails that failed."""
    from cellfactory.alerts import mail
    from cellfactory.qc.services import alert_overdue_reads

    alerted = alert_overdue_reads()
    click.echo(f"{len(alerted)} overdue final read(s) newly alerted.")
    _report_mail(*mail.send_due())


@alerts_group.command("send-mail")
@with_appcontext
def alerts_send_mail() -> None:
    """Send again the alert e-mails that failed or were never sent; exit 1 if some still fail."""
    from cellfactory.alerts import mail

    _report_mail(*mail.send_due())


def _report_mail(sent: int, failed: int) -> None:
    if not current_app.config["CELLFACTORY"].mail_enabled:
        click.echo("No SMTP host configured (CELLFACTORY_SMTP_HOST): alerts are not e-mailed.")
        return
    click.echo(f"Alert e-mails sent again: {sent}; failed: {failed}.")
    if failed:
        sys.exit(1)


@click.group("translations")
def translations_group() -> None:
    """The Italian catalogue: extract the messages, take translations in, check it is complete."""


@translations_group.command("update")
def translations_update() -> None:
    """Extract the messages of the code and templates into cellfactory/translations/it (new ones untranslated)."""
    from cellfactory.core import catalogue

    catalog = catalogue.update("it")
    untranslated = sum(1 for message in catalog if message.id and not message.string)
    click.echo(f"{len(catalog)} messages; {untranslated} to translate.")


@translations_group.command("fill")
@click.argument("sources", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def translations_fill(sources: tuple[Path, ...]) -> None:
    """Take the translations of other .po files for the messages the catalogue has and leaves untranslated."""
    from cellfactory.core import catalogue

    click.echo(f"Translations taken: {catalogue.fill('it', sources)}.")


@translations_group.command("check")
def translations_check() -> None:
    """Exit 1 if a message is untranslated or fuzzy, or a template shows text outside a translation call."""
    from cellfactory.core import catalogue, template_text
    from config import PROJECT_ROOT

    failed = False
    for problem in catalogue.all_problems()["it"]:
        click.echo(f"it: {problem}")
        failed = True
    for template, words in template_text.check(PROJECT_ROOT / "templates").items():
        click.echo(f"{template}: {' '.join(word for _, word in words)}")
        failed = True
    if failed:
        sys.exit(1)
    click.echo("The Italian catalogue is complete.")


def register_commands(app: Flask) -> None:
    for command in (db_group, demo_command, user_group, audit_group, token_group, collection_facility_group,
                    backup_command, restore_command, maintenance_command, alerts_group, translations_group):
        app.cli.add_command(command)

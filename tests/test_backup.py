"""`cellfactory backup` and `cellfactory restore`: a backup restored into a fresh database holds the same
records, an intact audit trail and signatures that still verify; a damaged backup or a used database is refused."""

from __future__ import annotations

import contextlib
import json
import tempfile
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from cellfactory import backup, create_app
from cellfactory.auth.models import Role
from cellfactory.batches.models import BatchStatus as S
from cellfactory.extensions import db
from cellfactory.signatures import services as signature_services
from cellfactory.signatures.models import Signature
from cellfactory.sites import services as site_services
from cellfactory.sites.commands import CreateSite
from tests.conftest import POSTGRES_SERVER, fresh_database, make_config, make_user, on_postgres


@contextlib.contextmanager
def empty_database() -> Iterator[str]:
    """A database with nothing in it, not even a schema: what a restore starts from."""
    if on_postgres():
        name = f"cellfactory_restore_{uuid.uuid4().hex[:12]}"
        admin = sa.create_engine(POSTGRES_SERVER, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
        try:
            yield sa.make_url(POSTGRES_SERVER).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as connection:
                connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.dispose()
    else:
        with tempfile.TemporaryDirectory(prefix="cellfactory-restore-") as folder:
            yield f"sqlite:///{folder}/restored.sqlite"


def _released_network(app) -> None:
    from tests.test_release_pages import again, awaiting_certification, certify_by_service, release_plant

    with app.app_context():
        sites = {code: site_services.create_site(None, CreateSite(code=code, name=name, facility_id=fin,
                                                                  timezone="Europe/Rome"))
                 for code, name, fin in [("BG", "Cell Factory Bergamo", "A9991"),
                                         ("MZ", "Cell Factory Monza", "A9992")]}
        users = {role.value: make_user(f"{role.value}.bg", [(role, "BG")]) for role in Role}
        plant = release_plant(users, sites)
        batch = awaiting_certification(plant, sites, pending=())
        certify_by_service(plant, batch, target=S.RELEASED)
        assert again(batch).status == S.RELEASED


def _state(app) -> tuple[dict[str, int], Counter]:
    with app.app_context():
        _revision, counts = backup.table_counts(app.config["CELLFACTORY"].database_url)
        statuses = Counter(status.value for status in signature_services.verify_all().values())
        db.session.remove()
    return counts, statuses


def _run(app, *args: str):
    return app.test_cli_runner().invoke(args=list(args))


def test_a_backup_restores_into_a_fresh_database_with_every_record_and_signature(tmp_path):
    with fresh_database() as source_url, empty_database() as target_url:
        source = create_app(make_config(source_url, tmp_path / "source"))
        _released_network(source)
        counts, statuses = _state(source)
        assert counts["signature"] >= 10 and counts["batch"] == 1
        assert set(statuses) == {"valid"}
        result = _run(source, "backup", str(tmp_path / "backup"))
        assert result.exit_code == 0, result.output
        manifest = json.loads((tmp_path / "backup" / "manifest.json").read_text())
        assert manifest["counts"] == counts
        # A second backup into the same folder would mix two copies: refused.
        assert _run(source, "backup", str(tmp_path / "backup")).exit_code == 1

        target = create_app(make_config(target_url, tmp_path / "target"))
        result = _run(target, "restore", str(tmp_path / "backup"))
        assert result.exit_code == 0, result.output
        assert "Audit trail intact" in result.output
        # The anchors came along: the restored trail is checked against them, up to the last signature's.
        assert "Last anchor checked" in result.output
        source_anchors = (tmp_path / "source" / "anchors.jsonl").read_bytes()
        assert source_anchors and (tmp_path / "target" / "anchors.jsonl").read_bytes() == source_anchors
        restored_counts, restored_statuses = _state(target)
        assert restored_counts == counts
        assert restored_statuses == statuses
        with target.app_context():
            assert db.session.scalar(sa.select(sa.func.count()).select_from(Signature)) == counts["signature"]
            db.session.remove()
        # Restoring again over the restored data is refused: a restore never mixes with existing records.
        again = _run(target, "restore", str(tmp_path / "backup"))
        assert again.exit_code == 1 and "not empty" in again.output


def test_a_damaged_backup_is_refused_and_nothing_is_restored(tmp_path):
    with fresh_database() as source_url, empty_database() as target_url:
        source = create_app(make_config(source_url, tmp_path / "source"))
        with source.app_context():
            site_services.create_site(None, CreateSite(code="BG", name="Cell Factory Bergamo", facility_id="A9991",
                                      timezone="Europe/Rome"))
        assert _run(source, "backup", str(tmp_path / "backup")).exit_code == 0
        data = next(p for p in (tmp_path / "backup").iterdir() if p.name.startswith("database."))
        with data.open("r+b") as handle:
            handle.seek(200)
            handle.write(b"\x00tampered\x00")
        target = create_app(make_config(target_url, tmp_path / "target"))
        result = _run(target, "restore", str(tmp_path / "backup"))
        assert result.exit_code == 1 and "damaged" in result.output
        _revision, counts = backup.table_counts(target_url)
        assert counts == {}


@pytest.mark.parametrize("missing", [True, False])
def test_restore_refuses_a_folder_that_is_not_a_backup(tmp_path, missing):
    folder = Path(tmp_path / "not-a-backup")
    folder.mkdir()
    if not missing:
        (folder / "manifest.json").write_text("{not json")
    with pytest.raises(backup.BackupError, match="not a cellfactory backup"):
        backup.restore("sqlite:///" + str(tmp_path / "x.sqlite"), folder)

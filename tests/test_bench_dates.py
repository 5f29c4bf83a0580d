"""The benchmark works on any day: the generated history ends at `--as-of`, not at "now", and the records
bench.run times are made by construction, so every one of them is there whatever the end date.

Issue 19: on 6 December 2026, scale 0.1 generated "now" held no released Bergamo UC-MSC batch with six units,
and `bench.run --quick` stopped with NoResultFound. Here scale 0.02 (22 days of history; the two subjects are
made 100 and 200 days before the end at every scale) is generated with three end dates, and every page, API
call and document bench.run measures is requested as bench.run requests it, with the app's clock at the real
now. On SQLite a temporary file; with CELLFACTORY_TEST_POSTGRES a throw-away database (the generator writes
with COPY there).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import tempfile
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from bench import SUBJECT_DONOR, default_as_of, parse_as_of, throwaway_postgres
from bench.generate import generate
from bench.run import FLOOR, PROBES, Dataset, MissingSubject, Session, _certificates, _record_pdf, find_subjects
from tests.conftest import POSTGRES_SERVER, fresh_database, on_postgres

SCALE = 0.02
AS_OF_DATES = [
    "2026-06-01",  # a Monday, the first of a month
    "2024-02-29T23:59:59+01:00",  # a leap day, late in the evening in Italy (22:59:59 UTC)
    "2026-12-06",  # the day the benchmark failed
]


@contextlib.contextmanager
def empty_target() -> Iterator[str]:
    """Where the generator writes: a file it creates, or an empty PostgreSQL database it migrates."""
    if on_postgres():
        with throwaway_postgres(POSTGRES_SERVER, prefix="cellfactory_test_bench") as url:
            yield url
    else:
        with tempfile.TemporaryDirectory(prefix="cellfactory-bench-") as folder:
            yield f"sqlite:///{folder}/bench.sqlite"


@pytest.mark.parametrize("as_of_text", AS_OF_DATES)
def test_every_subject_of_the_benchmark_answers_whatever_the_end_date(as_of_text: str) -> None:
    as_of = parse_as_of(as_of_text)
    with empty_target() as url:
        summary = generate(url, SCALE, as_of=as_of, log=lambda message: None)
        assert summary["end"] == as_of.isoformat()
        assert summary["subject"]["donor"] == SUBJECT_DONOR
        assert (summary["subject"]["status"], summary["subject"]["units"]) == ("released", 6)
        session = Session(Dataset("postgresql" if on_postgres() else "sqlite", SCALE, url, summary))
        try:
            subjects = session.subjects
            assert subjects.batch == summary["subject"]["batch"]
            assert subjects.large == summary["large_batch"]
            # Made by construction: numbered in the local year of their start, 100 and 200 days before the end.
            subject_year = (as_of - dt.timedelta(days=100)).astimezone(dt.UTC).year
            assert subjects.batch.startswith("BG-UCMSC-")
            assert int(subjects.batch.split("-")[2]) in (subject_year, subject_year + 1)
            with session.engine.connect() as connection:
                latest = connection.execute(sa.text("SELECT max(recorded_at) FROM audit_entry")).scalar()
            if isinstance(latest, str):  # SQLite hands back the stored text
                latest = dt.datetime.fromisoformat(latest)
            assert latest.replace(tzinfo=dt.UTC) <= as_of  # nothing after the end, so nothing in the future
            requested = []
            for probe in (FLOOR, *PROBES):
                if probe.endpoint not in session.app.view_functions:
                    continue
                sample = session.request(probe)
                assert (probe.name, sample.status, session.errors) == (probe.name, 200, [])
                assert sample.cpu > 0  # the request's own process time, measured around it
                requested.append(probe.name)
            assert {FLOOR.name, "batch page", "donor trace", "API batch", "API donor trace"} <= set(requested)
            record = _record_pdf(session, 1)  # raises unless 200
            assert record["pages"] >= 1
            certificates = _certificates(session, 1)
            assert set(certificates) == {"typical batch", "large batch"}
            assert session.errors == []
            assert _signature_statuses(session) == {"valid"}  # as the app signs: a QP can certify what QA reviewed
            assert _eligibility_statuses(session) == {"eligible"}  # samples in each donation's window
        finally:
            session.engine.dispose()


def _eligibility_statuses(session: Session) -> set[str]:
    """The app's eligibility of every generated source material's donation (REGULATORY: the sampling window)."""
    from cellfactory.donors.services import material_eligibility
    from cellfactory.extensions import db
    from cellfactory.materials.models import SourceMaterial

    with session.app.app_context():
        statuses = {str(material_eligibility(material).status)
                    for material in db.session.scalars(sa.select(SourceMaterial))}
        db.session.remove()
    return statuses


def _signature_statuses(session: Session) -> set[str]:
    """How every generated signature of a batch or a step checks against its record, read through the app."""
    from cellfactory.batches.models import Batch, BatchStep
    from cellfactory.extensions import db
    from cellfactory.signatures import services as signatures
    from cellfactory.signatures.models import Signature

    statuses = set()
    with session.app.app_context():
        for model in (Batch, BatchStep):
            found = db.session.scalars(sa.select(Signature).where(Signature.entity_type == model.__tablename__))
            for signature in found:
                statuses.add(signatures.check(signature, db.session.get(model, int(signature.entity_id))).status.value)
        db.session.remove()
    assert statuses, "no signature generated"
    return statuses


def test_bench_run_names_a_missing_subject_instead_of_failing_on_a_query() -> None:
    with fresh_database() as url:  # migrated, but not made by bench.generate
        engine = sa.create_engine(url)
        try:
            with engine.connect() as connection, pytest.raises(MissingSubject, match=SUBJECT_DONOR) as refused:
                find_subjects(connection, "scale 0.1")
        finally:
            engine.dispose()
    assert "generate it again" in str(refused.value)


def test_as_of_is_a_past_date_or_time_with_its_offset() -> None:
    assert parse_as_of("2024-02-29") == dt.datetime(2024, 2, 29, 12, tzinfo=dt.UTC)
    assert parse_as_of("2026-12-06T09:30:00+01:00") == dt.datetime(2026, 12, 6, 8, 30, tzinfo=dt.UTC)
    assert default_as_of() == dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC)
    tomorrow = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).date().isoformat()
    with pytest.raises(argparse.ArgumentTypeError, match="in the future"):
        parse_as_of(tomorrow)
    with pytest.raises(argparse.ArgumentTypeError, match="UTC offset"):
        parse_as_of("2026-06-01T12:00:00")
    for impossible in ("2026-02-29", "yesterday", "0001-01-01", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_as_of(impossible)


def test_the_command_line_refuses_a_future_end_with_a_clear_message(capsys: pytest.CaptureFixture[str]) -> None:
    import bench.generate as generate_module

    with pytest.raises(SystemExit) as stopped:
        generate_module.main(["--scale", "0.02", "--as-of", "2999-01-01"])
    assert stopped.value.code == 2
    assert "is in the future" in capsys.readouterr().err

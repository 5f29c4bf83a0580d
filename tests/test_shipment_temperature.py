"""A shipment's temperature: its limits, the logger's file read at receipt, the excursion decided from the data, the
file kept with its SHA-256 and a receipt deviation; through the pure reader, the services, the pages and the API."""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import hashlib
import io

import pytest
import sqlalchemy as sa

from cellfactory.audit.models import AuditEntry
from cellfactory.core.clock import utcnow
from cellfactory.core.errors import Conflict, ValidationFailed
from cellfactory.deviations.models import Classification, Deviation, DeviationSource
from cellfactory.extensions import db
from cellfactory.units import services as units
from cellfactory.units import temperature
from cellfactory.units.commands import CreateUnits, ReceiveShipment, Ship
from cellfactory.units.models import Shipment, ShipmentStatus, ShipmentTemperatureLog, UnitStatus
from cellfactory.units.temperature import LogProblem, Reading, judge, read_log
from tests.conftest import login, refetch
from tests.logger_files import logger_csv
from tests.test_api import assert_error, bearer, new_token
from tests.units_helpers import certify, make_units, released_batch, storage

API = "/api/v1"
D = decimal.Decimal
T0 = dt.datetime(2026, 12, 1, 9, 0, tzinfo=dt.UTC)


def minutes(n: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=n)


def series(*points: tuple[float, str]) -> list[Reading]:
    return [Reading(minutes(m), D(c)) for m, c in points]


def iso(hours_ago: float) -> str:
    return (utcnow() - dt.timedelta(hours=hours_ago)).isoformat()


# --- reading the file ------------------------------------------------------------------------------------------


def test_our_format_is_read_with_its_offsets_comments_and_bom():
    data = ("\ufeff# logger LOG-4471, exported 2026-12-01\n"
            "time,temperature_c\n"
            "2026-12-01T10:00:00+01:00,-185.2\n"
            "\n"
            "2026-12-01T09:05:00Z,-184.95\n"
            " 2026-12-01T10:10:00+01:00 , +3 \n").encode()
    assert read_log(data) == [Reading(minutes(0), D("-185.2")), Reading(minutes(5), D("-184.95")),
                              Reading(minutes(10), D("3"))]


GOOD = b"time,temperature_c\n2026-12-01T10:00:00+01:00,-185.2\n"


@pytest.mark.parametrize(("data", "message"), [
    (b"", "The logger file is empty."),
    (b"time,temperature_c\n" + b"2026-12-01T10:00:00+01:00,-185.2\n" * 400_000,
     "The logger file is larger than 10 MB."),
    (GOOD + b"2026-12-01T10:05:00+01:00,-18\x005\n", "The logger file contains NUL bytes: it is not a text file."),
    ("time,temperature_c\n2026-12-01T10:00:00+01:00,-185,2 °C\n".encode("latin-1"),
     "The logger file is not UTF-8 text: export it as UTF-8 CSV."),
    ("time,temperature_c\n2026-12-01T10:00:00+01:00,-185.2\n".encode("utf-16"),
     "The logger file contains NUL bytes: it is not a text file."),
    (b"Date,Time,Temperature\n2026-12-01,10:00,-185.2\n",
     "Line 1: the first line must be the header time,temperature_c."),
    (b"time,temperature_c\n", "The logger file holds no reading."),
    (GOOD + b"2026-12-01T10:05:00+01:00\n", "Line 3: give the time and the temperature, separated by one comma."),
    (GOOD + b"yesterday,-185\n",
     "Line 3: 'yesterday' is not an ISO 8601 time (e.g. 2026-12-01T08:00:00+01:00)."),
    (GOOD + b"2026-12-01T10:05:00,-185\n", "Line 3: the time has no UTC offset (e.g. +01:00 or Z)."),
    (GOOD + b"2026-12-01T10:05:00+01:00,abc\n", "Line 3: 'abc' is not a temperature in °C (e.g. -185.2)."),
    (GOOD + b"2026-12-01T10:05:00+01:00,1e2\n", "Line 3: '1e2' is not a temperature in °C (e.g. -185.2)."),
    (GOOD + b"2026-12-01T10:05:00+01:00,NaN\n", "Line 3: 'NaN' is not a temperature in °C (e.g. -185.2)."),
    (GOOD + b"2026-12-01T10:05:00+01:00,-300\n", "Line 3: -300 °C is outside -273.15 to +100 °C."),
    (GOOD + b"2026-12-01T10:05:00+01:00,100.5\n", "Line 3: 100.5 °C is outside -273.15 to +100 °C."),
    (GOOD + b"2026-12-01T09:00:00Z,-185\n", "Line 3: the time repeats the one before."),
    (GOOD + b"2026-12-01T09:55:00+01:00,-185\n", "Line 3: the time is earlier than the one before."),
    (GOOD + "2026-12-01T10:05:00+01:00,-185\u200f\n".encode(),
     "Line 3: '-185\\u200f' is not a temperature in °C (e.g. -185.2)."),
])
def test_a_file_that_cannot_be_trusted_is_refused_naming_the_problem(data, message):
    with pytest.raises(LogProblem) as refused:
        read_log(data)
    assert refused.value.message == message


def test_the_size_limit_is_ten_megabytes_exactly():
    header = b"time,temperature_c\n"
    line = b"2026-12-01T10:00:00+01:00,-185.2\n"
    padding = b"#" * (temperature.MAX_LOG_BYTES - len(header) - len(line) - 1) + b"\n"
    assert len(header + padding + line) == temperature.MAX_LOG_BYTES
    assert len(read_log(header + padding + line)) == 1
    with pytest.raises(LogProblem, match="larger than 10 MB"):
        read_log(header + b"#" + padding + line)


# --- judging the journey: vectors worked out by hand ------------------------------------------------------------


def test_linear_between_readings_across_an_upper_limit():
    # 2-8 °C; 4 -> 10 -> 4 °C at 10-minute steps. Above 8 °C from (8-4)/(10-4) = 2/3 of the first interval:
    # 600 s x 1/3 = 200 s, and the mirror image in the second: 400 s in all.
    journey = judge(series((0, "4"), (10, "10"), (20, "4")), departed_at=minutes(0), arrived_at=minutes(20),
                    low=D("2"), high=D("8"))
    assert (journey.minimum_c, journey.maximum_c, journey.seconds_outside, journey.is_excursion) == (
        D("4"), D("10"), 400, True)
    assert (journey.readings, journey.counted) == (3, 3)


def test_a_cryo_shipper_warming_above_minus_150():
    # At most -150 °C; -180 -> -120 -> -180 °C at 30-minute steps: above -150 °C for the second half of the first
    # interval (900 s) and the first half of the second (900 s): 1800 s.
    journey = judge(series((0, "-180"), (30, "-120"), (60, "-180")), departed_at=minutes(0),
                    arrived_at=minutes(60), low=None, high=D("-150"))
    assert (journey.minimum_c, journey.maximum_c, journey.seconds_outside) == (D("-180"), D("-120"), 1800)


def test_below_the_lower_limit():
    # 2-8 °C; 4 -> 0 -> 4 °C at 10-minute steps: below 2 °C for half of each interval: 300 s + 300 s.
    journey = judge(series((0, "4"), (10, "0"), (20, "4")), departed_at=minutes(0), arrived_at=minutes(20),
                    low=D("2"), high=D("8"))
    assert journey.seconds_outside == 600


def test_a_reading_on_the_limit_is_within_it():
    journey = judge(series((0, "8"), (10, "8"), (20, "2")), departed_at=minutes(0), arrived_at=minutes(20),
                    low=D("2"), high=D("8"))
    assert (journey.seconds_outside, journey.is_excursion) == (0, False)


def test_one_second_outside_is_an_excursion():
    # 7 -> 9 °C in 10 s against at most 8 °C: 5 s outside.
    readings = [Reading(T0, D("7")), Reading(T0 + dt.timedelta(seconds=10), D("9")),
                Reading(T0 + dt.timedelta(seconds=20), D("7"))]
    journey = judge(readings, departed_at=T0, arrived_at=T0 + dt.timedelta(seconds=20), low=None, high=D("8"))
    assert (journey.seconds_outside, journey.is_excursion) == (10, True)


def test_a_gap_of_more_than_an_hour_counts_in_full():
    # Both readings at 5 °C, within 2-8 °C, but 90 minutes apart: 5400 s unrecorded, counted outside.
    journey = judge(series((0, "5"), (90, "5")), departed_at=minutes(0), arrived_at=minutes(90),
                    low=D("2"), high=D("8"))
    assert journey.seconds_outside == 5400
    # Exactly 60 minutes is an interval like any other.
    assert judge(series((0, "5"), (60, "5")), departed_at=minutes(0), arrived_at=minutes(60),
                 low=D("2"), high=D("8")).seconds_outside == 0


def test_before_the_first_and_after_the_last_reading():
    readings = series((30, "5"), (40, "5"), (50, "5"))
    # Started 30 minutes after departure, stopped 10 minutes before arrival, within limits: taken as those readings.
    assert judge(readings, departed_at=minutes(0), arrived_at=minutes(60), low=D("2"),
                 high=D("8")).seconds_outside == 0
    # Started 90 minutes after departure: those 5400 s are unrecorded and count outside.
    assert judge(readings, departed_at=minutes(-60), arrived_at=minutes(60), low=D("2"),
                 high=D("8")).seconds_outside == 5400
    # A first reading outside the limits stands for the stretch before it: 1800 s + the interval 9 -> 5 °C, above
    # 8 °C for its first quarter (150 s).
    warm = series((30, "9"), (40, "5"))
    assert judge(warm, departed_at=minutes(0), arrived_at=minutes(40), low=D("2"),
                 high=D("8")).seconds_outside == 1950


def test_only_the_time_between_departure_and_arrival_counts():
    # Conditioning at 20 °C before departure (09:00): the interval 08:50 (20 °C) -> 09:00... is cut at departure
    # 08:55, where the line is at 12.5 °C; it falls to 5 °C at 09:00, above 8 °C until (8-12.5)/(5-12.5) = 0.6 of
    # those 300 s: 180 s. The 20 °C reading itself does not count for the maximum.
    readings = series((-10, "20"), (0, "5"), (10, "5"), (20, "5"), (30, "5"))
    journey = judge(readings, departed_at=minutes(-5), arrived_at=minutes(30), low=D("2"), high=D("8"))
    assert (journey.seconds_outside, journey.minimum_c, journey.maximum_c, journey.counted, journey.readings) == (
        180, D("5"), D("5"), 4, 5)


def test_readings_far_from_the_journey_are_not_of_this_shipment():
    early = series((-13 * 60, "5"), (0, "5"))
    with pytest.raises(LogProblem, match="more than 12 hours away"):
        judge(early, departed_at=minutes(0), arrived_at=minutes(60), low=D("2"), high=D("8"))
    late = series((0, "5"), (60 + 12 * 60 + 1, "5"))
    with pytest.raises(LogProblem, match="more than 12 hours away"):
        judge(late, departed_at=minutes(0), arrived_at=minutes(60), low=D("2"), high=D("8"))
    before = series((-120, "5"), (-60, "5"))
    with pytest.raises(LogProblem, match="No reading falls between the departure and the arrival"):
        judge(before, departed_at=minutes(0), arrived_at=minutes(60), low=D("2"), high=D("8"))


# --- services ----------------------------------------------------------------------------------------------------


@pytest.fixture
def bank(users, sites):
    plant, batch = released_batch(users, sites)
    certify(plant, batch)
    made = make_units(plant, batch, 3)
    units.release_units(refetch(plant.qa), refetch(batch))
    storage(plant, sites["BG"])
    return {"plant": plant, "batch": batch, "ids": [u.identifier for u in made]}


def _ship(bank, *, hours_ago: float = 5, **limits) -> Shipment:
    return units.ship(refetch(bank["plant"].tech), Ship.parse(dict(
        units=bank["ids"][:2], to_site="MZ", shipper="BioCourier", logger_reference="LOG-4471",
        departed_at=iso(hours_ago), **limits)))


def _saved() -> tuple:
    return (db.session.scalar(sa.select(sa.func.count(ShipmentTemperatureLog.id))),
            db.session.scalar(sa.select(sa.func.count(Deviation.id))),
            db.session.scalar(sa.select(sa.func.count(Shipment.id)).where(
                Shipment.status == ShipmentStatus.RECEIVED)))


def test_a_cryo_shipment_gets_its_limit_and_a_fresh_one_needs_typed_limits(bank, users):
    shipment = _ship(bank)
    assert (shipment.temperature_min_c, shipment.temperature_max_c) == (None, D("-150"))
    plant = bank["plant"]
    fresh = units.create_units(refetch(plant.tech), refetch(bank["batch"]), CreateUnits.parse(dict(
        batch=bank["batch"].number, count=1, volume_ml=20, cells_per_unit=1e8, preservation="fresh",
        prepared_at=iso(1))))
    units.release_units(refetch(plant.qa), refetch(bank["batch"]))
    command = dict(units=[fresh[0].identifier], to_site="MZ", shipper="C", logger_reference="L", departed_at=iso(0.5))
    with pytest.raises(ValidationFailed) as refused:
        units.ship(refetch(plant.tech), Ship.parse(command))
    assert refused.value.fields == {"temperature_max_c": "Give the temperature limits of fresh or thawed units, "
                                                         "e.g. 2 to 8 °C or 15 to 25 °C."}
    with pytest.raises(ValidationFailed) as refused:
        units.ship(refetch(plant.tech), Ship.parse(command | {"temperature_min_c": 8, "temperature_max_c": 2}))
    assert refused.value.fields == {"temperature_max_c": "The highest temperature must be above the lowest."}
    for wrong, message in [("8", "Must be a number (JSON number, not text)."), (True, "Enter a number."),
                           (-300, "Give a temperature from -273.15 to +100 °C."), (2.555, "At most two decimals.")]:
        with pytest.raises(ValidationFailed) as refused:
            Ship.parse(command | {"temperature_min_c": wrong})
        assert refused.value.fields == {"temperature_min_c": message}
    assert refetch(fresh[0]).status == UnitStatus.AVAILABLE  # nothing shipped
    shipped = units.ship(refetch(plant.tech), Ship.parse(command | {"temperature_min_c": 15, "temperature_max_c": 25}))
    assert (shipped.temperature_min_c, shipped.temperature_max_c) == (D("15"), D("25"))


def test_a_clean_logger_file_receives_the_units_and_is_kept_with_its_hash(bank, users):
    shipment = _ship(bank)
    data = logger_csv(5.5, 0.5, "-185.4")
    units.receive(refetch(users["technician_mz"]), refetch(shipment), ReceiveShipment.parse(dict(
        arrived_at=iso(1), temperature_log=data, temperature_log_filename="LOG-4471.csv", condition="intact")))
    shipment = refetch(shipment)
    log = shipment.temperature_log
    assert (shipment.status, shipment.temperature_excursion, shipment.receipt_deviation) == (
        ShipmentStatus.RECEIVED, False, None)
    assert (log.filename, log.sha256, log.size_bytes, log.seconds_outside, log.is_excursion) == (
        "LOG-4471.csv", hashlib.sha256(data).hexdigest(), len(data), 0, False)
    assert (log.minimum_c, log.maximum_c) == (D("-185.4"), D("-185.4"))
    # 10-minute readings from 5.5 h to 0.5 h ago: 31 in the file; from departure (5 h) to arrival (1 h) 24 or 25
    # depending on where the seconds fall.
    assert log.readings == 31 and log.counted_readings in (24, 25)
    assert units.temperature_log_content(log) == data
    [created] = db.session.scalars(sa.select(AuditEntry).where(
        AuditEntry.entity_type == "shipment_temperature_log", AuditEntry.action == "create"))
    assert created.changes["sha256"] == [None, log.sha256] and "content" not in created.changes
    assert {u.status for u in (i.unit for i in shipment.items)} == {UnitStatus.RECEIVED}


def test_an_excursion_in_the_data_quarantines_and_opens_a_receipt_deviation(bank, users, sites):
    shipment = _ship(bank)
    data = logger_csv(5, 1, "-140.5", step_minutes=30)  # above -150 °C throughout: 4 h outside
    units.receive(refetch(users["technician_mz"]), refetch(shipment), ReceiveShipment.parse(dict(
        arrived_at=iso(1), temperature_log=data, condition="dry shipper intact")))
    shipment = refetch(shipment)
    assert shipment.temperature_excursion is True and shipment.temperature_log.seconds_outside == 4 * 3600
    assert {i.unit.status for i in shipment.items} == {UnitStatus.QUARANTINE}
    deviation = shipment.receipt_deviation
    assert (deviation.site_id, deviation.source, deviation.classification, deviation.batch_id) == (
        sites["MZ"].id, DeviationSource.SHIPMENT, Classification.MAJOR, None)
    assert deviation.title == f"Shipment {shipment.number}: temperature excursion in transit"
    assert ("Limits at most -150 °C" in deviation.description and "minimum -140.5 °C, maximum -140.5 °C" in
            deviation.description and "4 h 00 min 00 s outside the limits" in deviation.description)


def test_a_refused_file_saves_nothing(bank, users):
    shipment = _ship(bank)
    before = _saved()
    tech_mz = refetch(users["technician_mz"])
    far = logger_csv(30, 1)
    cases = [
        (dict(temperature_log=b"time,temperature_c\n2026-12-01T10:00:00,-185\n"),
         {"temperature_log": "Line 2: the time has no UTC offset (e.g. +01:00 or Z)."}),
        (dict(temperature_log=logger_csv(5.4, 5.1)),
         {"temperature_log": "No reading falls between the departure and the arrival."}),
        (dict(temperature_log=far),
         {"temperature_log": f"A reading at {read_log(far)[0].at.isoformat()} is more than 12 hours away from the "
                             "shipment's departure and arrival: is it the logger of this shipment?"}),
        (dict(temperature_log=logger_csv(5, 1), temperature_excursion=False),
         {"temperature_excursion": "The excursion is decided from the logger file: leave it out."}),
        ({}, {"temperature_log": "Upload the logger file; only if it cannot be read out, say whether the logger "
                                 "shows an excursion."}),
    ]
    for change, fields in cases:
        with pytest.raises(ValidationFailed) as refused:
            units.receive(tech_mz, refetch(shipment), ReceiveShipment.parse(
                dict(arrived_at=iso(1), condition="ok") | change))
        assert refused.value.fields == fields
    assert _saved() == before and refetch(shipment).status == ShipmentStatus.IN_TRANSIT


def test_a_receipt_without_the_file_opens_a_minor_deviation(bank, users):
    shipment = _ship(bank)
    units.receive(refetch(users["technician_mz"]), refetch(shipment), ReceiveShipment.parse(dict(
        arrived_at=iso(1), temperature_excursion=False, condition="logger display broken")))
    shipment = refetch(shipment)
    assert shipment.temperature_log is None and shipment.temperature_excursion is False
    assert shipment.receipt_deviation.classification == Classification.MINOR
    assert {i.unit.status for i in shipment.items} == {UnitStatus.RECEIVED}


def test_a_kept_file_altered_in_the_database_is_not_served(bank, users):
    shipment = _ship(bank)
    units.receive(refetch(users["technician_mz"]), refetch(shipment), ReceiveShipment.parse(dict(
        arrived_at=iso(1), temperature_log=logger_csv(5, 1), condition="ok")))
    db.session.execute(sa.update(ShipmentTemperatureLog).values(content=b"time,temperature_c\n"))
    db.session.expire_all()
    with pytest.raises(Conflict, match="no longer matches the SHA-256"):
        units.temperature_log_content(refetch(shipment).temperature_log)


# --- pages -------------------------------------------------------------------------------------------------------


def _local(hours_ago: float) -> str:
    from zoneinfo import ZoneInfo

    return (utcnow() - dt.timedelta(hours=hours_ago)).astimezone(ZoneInfo("Europe/Rome")).strftime("%Y-%m-%dT%H:%M")


def test_the_receipt_page_takes_the_file_and_shows_what_it_says(client, bank, users):
    number = _ship(bank).number
    login(client, "technician.mz")
    page = client.get(f"/shipments/{number}").get_data(as_text=True)
    assert "time,temperature_c" in page and 'enctype="multipart/form-data"' in page
    bad = client.post(f"/shipments/{number}/receive", content_type="multipart/form-data", data={
        "arrived_at": _local(1), "condition": "ok",
        "temperature_log": (io.BytesIO(b"time,temperature_c\n2026-12-01T10:00:00+01:00,warm\n"), "log.csv")})
    assert bad.status_code == 422
    assert "Line 2: &#39;warm&#39; is not a temperature in °C (e.g. -185.2)." in bad.get_data(as_text=True)
    assert refetch(db.session.scalar(sa.select(Shipment).where(Shipment.number == number))).status == \
        ShipmentStatus.IN_TRANSIT
    data = logger_csv(5.5, 0.5, "-120", step_minutes=30)
    received = client.post(f"/shipments/{number}/receive", content_type="multipart/form-data", data={
        "arrived_at": _local(1), "condition": "ok",
        "temperature_log": (io.BytesIO(data), "../\u202eLOG-4471\x00.csv")})
    assert received.status_code == 302
    shipment = db.session.scalar(sa.select(Shipment).where(Shipment.number == number))
    assert shipment.temperature_excursion is True
    assert shipment.temperature_log.filename == "LOG-4471.csv"  # the name as the disk had it, plain characters
    page = client.get(f"/shipments/{number}").get_data(as_text=True)
    assert hashlib.sha256(data).hexdigest() in page and "LOG-4471.csv" in page and "<polyline" in page
    assert "-120 °C" in page and shipment.receipt_deviation.number in page
    download = client.get(f"/shipments/{number}/temperature-log.csv")
    assert download.status_code == 200 and download.data == data
    assert download.headers["X-Content-SHA256"] == hashlib.sha256(data).hexdigest()


def test_the_shipping_page_takes_the_limits(client, bank):
    login(client, "technician.bg")
    shipped = client.post("/shipments/new", data={
        "units": [bank["ids"][0]], "to_site": "MZ", "shipper": "BioCourier", "logger_reference": "LOG-1",
        "departed_at": _local(1), "temperature_min_c": "-196", "temperature_max_c": "-150"})
    assert shipped.status_code == 302
    number = shipped.headers["Location"].rsplit("/", 1)[1]
    shipment = db.session.scalar(sa.select(Shipment).where(Shipment.number == number))
    assert (shipment.temperature_min_c, shipment.temperature_max_c) == (D("-196"), D("-150"))
    refused = client.post("/shipments/new", data={
        "units": [bank["ids"][1]], "to_site": "MZ", "shipper": "BioCourier", "logger_reference": "LOG-1",
        "departed_at": _local(1), "temperature_min_c": "cold", "temperature_max_c": "-150"})
    assert refused.status_code == 422 and "Enter a number." in refused.get_data(as_text=True)


# --- API ---------------------------------------------------------------------------------------------------------


def test_the_api_takes_the_file_in_base64_and_serves_it_back(client, bank, users):
    tokens = {key: bearer(new_token(users[key])) for key in ("technician", "technician_mz", "auditor_network")}
    answer = client.post(f"{API}/shipments", headers=tokens["technician"], json={
        "units": bank["ids"][:1], "to_site": "MZ", "shipper": "C", "logger_reference": "L", "departed_at": iso(5),
        "temperature_max_c": -150})
    assert answer.status_code == 201 and answer.get_json()["temperature_max_c"] == -150.0
    number = answer.get_json()["number"]
    receipt = {"arrived_at": iso(1), "condition": "intact"}
    assert_error(client.post(f"{API}/shipments/{number}/receipt", headers=tokens["technician_mz"],
                             json=receipt | {"temperature_log": "not base64!"}), 422, "invalid", "temperature_log")
    assert_error(client.post(f"{API}/shipments/{number}/receipt", headers=tokens["technician_mz"],
                             json=receipt | {"temperature_log": base64.b64encode(b"\xff\xfe-185").decode()}),
                 422, "invalid", "temperature_log")
    assert db.session.scalar(sa.select(sa.func.count(ShipmentTemperatureLog.id))) == 0
    data = logger_csv(5.5, 0.5, "-190.25")
    done = client.post(f"{API}/shipments/{number}/receipt", headers=tokens["technician_mz"],
                       json=receipt | {"temperature_log": base64.b64encode(data).decode(),
                                       "temperature_log_filename": "LOG.csv"})
    assert done.status_code == 200, done.get_json()
    body = done.get_json()
    assert body["temperature_excursion"] is False and body["receipt_deviation"] is None
    log = body["temperature_log"]
    assert (log["sha256"], log["minimum_c"], log["maximum_c"], log["seconds_outside"], log["filename"]) == (
        hashlib.sha256(data).hexdigest(), -190.25, -190.25, 0, "LOG.csv")
    served = client.get(f"{API}/shipments/{number}/temperature-log", headers=tokens["auditor_network"])
    assert served.status_code == 200 and served.data == data
    assert served.headers["X-Content-SHA256"] == log["sha256"]
    assert client.get(f"{API}/shipments/{number}/temperature-log").status_code == 401

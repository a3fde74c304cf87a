"""Scores on a crafted dataset with hand-computed results, written into a real influxd.

The day scored is 2026-03-02 in Asia/Shanghai. Windows of hall `hz`:
- a1 (device k-a1, five keys): 40 counted ratings 20×5, 10×4, 5×3, 3×2, 2×1 → score
  3075/40 = 76.875 → 76.88, satisfaction 35/40, 5 negatives. Not counted: 3 from test
  device k-t, 2 repeats (x-repeat), 1 while paused, 1 reviewed as fraud (same ticket),
  1 approved appeal. Cases: the appeal's (closed on time), one closed on time, one open.
- a2 (k-a2, three keys): 10 top ratings unprompted in a row (flagged, pending, still
  counted), 3×2, 1×1 → 14 ratings: insufficient sample.
- b1 (k-b1, four keys): 15×4, 10×3, 3×2, 2×1 → 2266.67/30 = 75.56; one rating 10 s after
  another (flagged too fast, pending); one case closed late.
- c9: in the registry, no ratings.
Hall `hx` window z1: 5 ratings at 满意. One rating each on the days before and after.
"""

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import select

from devstack.postgres import PgCluster
from devstack.services import Influxd
from protocol.messages import DeviceStatus, RatingEvent, ServiceEvent
from server.cases.models import Case
from server.db.engine import Database
from server.db.models import Device, Hall, ServiceItem, Staff, Unit, Window
from server.scores.engine import ScoreResult, compute_scores
from server.scores.models import RatingFlag
from server.scores.periods import Period, period_of
from server.scores.policy import Policy, PolicyError, load_policy
from server.scores.rollup import build_rollups, check_rollups
from storage.client import InfluxClient, InfluxSettings
from storage.lineproto import event_line, rating_line, status_line

TZ = ZoneInfo("Asia/Shanghai")
DAY = date(2026, 3, 2)
T0 = int(datetime(2026, 3, 2, 9, 0, tzinfo=TZ).timestamp() * 1000)
SAMPLE = Path(__file__).resolve().parent.parent / "server" / "scores" / "policy.sample.toml"


@dataclass
class Dataset:
    """The crafted ratings and events, and the ids the test refers to."""

    ratings: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    ids: dict[str, str] = field(default_factory=dict)
    seqs: dict[str, int] = field(default_factory=dict)

    def rate(self, device: str, window: str, ts: int, scale: int, level: int, **kw: Any) -> str:
        """Add a rating and return its id."""
        hall = kw.pop("hall", "hz")
        self.seqs[device] = self.seqs.get(device, 0) + 1
        doc = {
            "v": 1, "id": str(uuid.uuid4()), "device": device, "hall": hall, "window": window,
            "seq": self.seqs[device], "ts": ts, "clock_synced": True, "scale": scale,
            "level": level, "input": "touch", "prompted": True, "staff": None, "ticket": None,
            "item": None, "reasons": [],
        }  # fmt: skip
        doc.update(kw)
        self.ratings.append(doc)
        return str(doc["id"])

    def event(self, device: str, ts: int, kind: str) -> None:
        """Add a service event."""
        self.events.append(
            {
                "v": 1,
                "id": str(uuid.uuid4()),
                "device": device,
                "hall": "hz",
                "window": "a1",
                "ts": ts,
                "clock_synced": True,
                "type": kind,
            }
        )

    def lines(self) -> str:
        """Line protocol of everything, as the gateway writes it."""
        out = [rating_line(RatingEvent.model_validate_json(json.dumps(d))) for d in self.ratings]
        out += [event_line(ServiceEvent.model_validate_json(json.dumps(e))) for e in self.events]
        return "\n".join(out) + "\n"


def local_ms(day: date, hour: int, minute: int) -> int:
    """Epoch ms of a local time."""
    return int(datetime(day.year, day.month, day.day, hour, minute, tzinfo=TZ).timestamp() * 1000)


def crafted() -> Dataset:
    """Build the dataset described in the module docstring (in press order per device)."""
    ds = Dataset()
    s = 1000
    a1 = {"staff": "s1", "item": "i1"}
    ds.rate("k-a1", "a1", local_ms(date(2026, 3, 1), 23, 50), 5, 1, **a1)  # day before
    levels = [5] * 20 + [4] * 10 + [3] * 5 + [2] * 3 + [1] * 2
    for k, lv in enumerate(levels):
        ts = local_ms(DAY, 0, 30) if k == 0 else T0 + k * 120 * s
        ds.ids[f"a1-{k}"] = ds.rate("k-a1", "a1", ts, 5, lv, ticket=f"A{k:03d}", **a1)
        if k == 5:  # two repeats right after
            for extra in (3, 6):
                ds.rate("k-a1", "a1", ts + extra * s, 5, 5, reasons=["x-repeat"], **a1)
    ds.event("k-a1", T0 + 4800 * s, "pause")
    ds.ids["paused"] = ds.rate("k-a1", "a1", T0 + 4860 * s, 5, 1, ticket="P1", **a1)
    ds.event("k-a1", T0 + 5100 * s, "resume")
    ds.ids["appeal"] = ds.rate("k-a1", "a1", T0 + 5400 * s, 5, 1, ticket="X1", **a1)
    ds.ids["fraud"] = ds.rate("k-a1", "a1", T0 + 5520 * s, 5, 5, ticket="A010", **a1)
    ds.rate("k-a1", "a1", local_ms(date(2026, 3, 3), 0, 10), 5, 1, **a1)  # day after
    for k in range(3):  # a test device at window a1
        ds.rate("k-t", "a1", T0 + (100 + 120 * k) * s, 5, 5, prompted=False, **a1)
    a2 = {"staff": "s2", "item": "i1"}
    for k in range(10):
        ds.rate("k-a2", "a2", T0 + (3600 + 60 * k) * s, 3, 3, prompted=False, **a2)
    for k, lv in enumerate([2, 2, 2, 1]):
        ds.rate("k-a2", "a2", T0 + (4400 + 60 * k) * s, 3, lv, ticket=f"B{k:03d}", **a2)
    b1_levels = [4] * 15 + [3] * 10 + [2] * 3 + [1] * 2
    for k, lv in enumerate(b1_levels):
        ts = T0 + (7200 + 120 * k) * s if k != 1 else T0 + 7210 * s
        who = {"staff": "s3", "item": "i2"} if k != 29 else {}
        ds.ids[f"b1-{k}"] = ds.rate("k-b1", "b1", ts, 4, lv, ticket=f"C{k:03d}", **who)
    for k in range(5):
        ds.rate("k-z1", "z1", T0 + 600 * k * s, 5, 4, hall="hx", staff="s1", item="i1")
    return ds


def write_lines(url: str, lines: str) -> None:
    """Write line protocol into database windowrate over the v1 HTTP API."""
    httpx.post(f"{url}/query", params={"q": 'CREATE DATABASE "windowrate"'}).raise_for_status()
    resp = httpx.post(f"{url}/write", params={"db": "windowrate", "precision": "ns"}, content=lines)
    assert resp.status_code == 204, resp.text


def fill_registry(db: Database) -> None:
    """Halls hz and hx, units u1 (a1, a2) and u2 (b1, c9), devices (k-t a test device)."""
    with db.session() as s:
        hz, hx = Hall(code="hz", name="市民中心"), Hall(code="hx", name="西区大厅")
        u1, u2 = (
            Unit(hall=hz, code="u1", name="市场监管局"),
            Unit(hall=hz, code="u2", name="税务局"),
        )
        s.add_all([hz, hx, u1, u2])
        w = {
            "a1": Window(hall=hz, unit=u1, code="a1", name="A1 窗口"),
            "a2": Window(hall=hz, unit=u1, code="a2", name="A2 窗口"),
            "b1": Window(hall=hz, unit=u2, code="b1", name="B1 窗口"),
            "c9": Window(hall=hz, unit=u2, code="c9", name="C9 窗口"),
            "z1": Window(hall=hx, code="z1", name="Z1 窗口"),
        }
        s.add_all(w.values())
        for code, win in [("k-a1", "a1"), ("k-a2", "a2"), ("k-b1", "b1"), ("k-z1", "z1")]:
            s.add(Device(code=code, hall=w[win].hall, window=w[win]))
        s.add(Device(code="k-t", hall=hz, window=w["a1"], test_device=True))
        s.add_all(
            [Staff(hall=hz, number="s1", name="张三"), ServiceItem(code="i1", name="营业执照")]
        )
        s.commit()


def add_cases(db: Database, ds: Dataset) -> None:
    """The appeal's case (approved, closed on time) and three more."""
    due = date(2026, 3, 20)

    def case(rid: str, window: str, device: str, level: int, scale: int, **kw: Any) -> Case:
        base: dict[str, Any] = {
            "rating_id": rid, "hall": "hz", "window": window, "device": device,
            "level": level, "scale": scale, "staff": "s1", "item": "i1", "reasons": "",
            "rating_ts": datetime.fromtimestamp(T0 / 1000, UTC), "due": due, "notes": "",
        }  # fmt: skip
        base.update(kw)
        return Case(**base)

    on_time = datetime(2026, 3, 5, 3, 0, tzinfo=UTC)
    with db.session() as s:
        s.add_all(
            [
                case(ds.ids["appeal"], "a1", "k-a1", 1, 5, state="closed", closed=on_time,
                     appeal_kind="mistaken", appeal_state="approved"),
                case(ds.ids["a1-38"], "a1", "k-a1", 1, 5, state="closed", closed=on_time),
                case(ds.ids["a1-39"], "a1", "k-a1", 1, 5, state="open"),
                case(ds.ids["b1-28"], "b1", "k-b1", 1, 4, state="closed", staff="s3", item="i2",
                     closed=datetime(2026, 3, 25, 3, 0, tzinfo=UTC)),
            ]
        )  # fmt: skip
        s.commit()


@dataclass
class World:
    """A real influxd holding the crafted data, and a migrated registry database."""

    influx: InfluxClient
    db: Database
    ds: Dataset
    url: str


@pytest.fixture
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The server database: SQLite unless a test asks for PostgreSQL (indirect parameter)."""
    if getattr(request, "param", "sqlite") == "sqlite":
        return f"sqlite:///{tmp_path / 'wr.db'}"
    cluster: PgCluster = request.getfixturevalue("pg")
    return cluster.new_database()


@pytest.fixture
def world(influx: Influxd, db_url: str) -> Iterator[World]:
    """The crafted dataset in a real influxd; registry and cases in `db_url`."""
    ds = crafted()
    write_lines(influx.url, ds.lines())
    db = Database(db_url)
    db.upgrade()
    fill_registry(db)
    add_cases(db, ds)
    client = InfluxClient(InfluxSettings(url=influx.url))
    yield World(client, db, ds, influx.url)
    client.close()
    db.close()


def score(w: World, level: str, policy: Policy | None = None, **kw: Any) -> ScoreResult:
    """Scores of DAY at `level`."""
    with w.db.session() as s:
        return compute_scores(
            level, Period(DAY, DAY), policy=policy or Policy(), tz=TZ, influx=w.influx,
            session=s, **kw,
        )  # fmt: skip


def review(w: World, rating_id: str, verdict: str = "fraud") -> None:
    """Mark every flag of a rating as reviewed."""
    with w.db.session() as s:
        for f in s.scalars(select(RatingFlag).where(RatingFlag.rating_id == rating_id)):
            f.status, f.reviewed_by = verdict, "office"
        s.commit()


def rows_by_key(result: ScoreResult) -> dict[str, dict[str, Any]]:
    """Rows as dicts keyed by hall/key."""
    return {f"{r.hall}/{r.key}": r.model_dump() for r in result.rows}


def test_policy_defaults_sample_hash_and_validation(tmp_path: Path) -> None:
    """The sample file is the defaults; a changed rule changes the hash; bad files are refused."""
    default = Policy()
    assert load_policy(SAMPLE).hash == default.hash == load_policy(None).hash
    assert default.index(5, 4) == 75.0 and default.negative(5, 2) and not default.negative(4, 2)
    assert default.satisfied(3, 2) and not default.satisfied(5, 2)
    changed = tmp_path / "p.toml"
    changed.write_text("min_sample = 20\n")
    assert load_policy(changed).hash != default.hash
    changed.write_text("[points]\ndefault = 10.0\n")
    assert load_policy(changed).hash != default.hash
    for bad in ("min_sampel = 3\n", '[scales]\nindex = { "5" = [0, 1] }\n', "min_sample = 0\n"):
        changed.write_text(bad)
        with pytest.raises(PolicyError):
            load_policy(changed)


def test_periods() -> None:
    """Week is Monday–Sunday, quarter and month boundaries, --to inclusive in local time."""
    assert period_of("week", date(2026, 3, 4)) == Period(date(2026, 3, 2), date(2026, 3, 8), "week")
    assert period_of("month", date(2026, 2, 10)).last == date(2026, 2, 28)
    assert period_of("quarter", date(2026, 11, 30)) == Period(
        date(2026, 10, 1), date(2026, 12, 31), "quarter"
    )
    assert period_of("year", DAY).days()[-1] == date(2026, 12, 31)
    start, end = Period(DAY, DAY).bounds(TZ)
    assert start == datetime(2026, 3, 1, 16, tzinfo=UTC) and end - start == timedelta(days=1)
    with pytest.raises(ValueError):
        Period(DAY, DAY - timedelta(days=1))


EXPECTED_WINDOWS: dict[str, dict[str, Any]] = {
    "hz/a1": {
        "ratings": 40, "levels": {"1": 2, "2": 3, "3": 5, "4": 10, "5": 20}, "satisfied": 35,
        "satisfaction_rate": 0.875, "score": 76.88, "negatives": 5, "status": "scored",
        "excluded": 8, "unit": "u1", "name": "A1 窗口",
        "exclusions": {"test_device": 3, "repeat": 2, "paused": 1, "fraud": 1, "appeal": 1},
        "cases": 3, "cases_closed": 2, "cases_closed_on_time": 2, "handling_rate": 0.6667,
        "on_time_rate": 0.6667, "points": 76.88, "allocated_points": 100.0,
    },
    "hz/a2": {
        "ratings": 14, "levels": {"1": 1, "2": 3, "3": 10, "4": 0, "5": 0}, "satisfied": 13,
        "satisfaction_rate": 0.9286, "score": None, "negatives": 1,
        "status": "insufficient_sample", "excluded": 0, "exclusions": {}, "cases": 0,
        "handling_rate": None, "points": None,
    },
    "hz/b1": {
        "ratings": 30, "levels": {"1": 2, "2": 3, "3": 10, "4": 15, "5": 0}, "satisfied": 28,
        "satisfaction_rate": 0.9333, "score": 75.56, "negatives": 2, "status": "scored",
        "excluded": 0, "cases": 1, "cases_closed": 1, "cases_closed_on_time": 0,
        "handling_rate": 1.0, "on_time_rate": 0.0, "points": 75.56,
    },
    "hz/c9": {"ratings": 0, "satisfaction_rate": None, "status": "insufficient_sample"},
    "hx/z1": {"ratings": 5, "levels": {"1": 0, "2": 0, "3": 0, "4": 5, "5": 0}, "score": None},
}  # fmt: skip


def check(rows: dict[str, dict[str, Any]], expected: dict[str, dict[str, Any]]) -> None:
    """Every expected value is in the rows."""
    assert set(rows) == set(expected)
    for key, want in expected.items():
        got = {k: rows[key][k] for k in want}
        assert got == want, key


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_every_rule_on_the_crafted_dataset(world: World) -> None:
    """Raw scores, then flags from the rollup job, a review, and rollup-based scores agree."""
    ds = world.ds
    built = None
    with world.db.session() as s:
        built = build_rollups(s, world.influx, Period(DAY - timedelta(days=1), DAY), TZ, Policy())
        flags = {(f.rating_id, f.rule) for f in s.scalars(select(RatingFlag))}
    assert [b.ratings for b in built] == [1, 40 + 2 + 3 + 3 + 14 + 30 + 5]
    top_run = [r["id"] for r in ds.ratings if r["device"] == "k-a2" and r["level"] == 3]
    assert flags == {
        (ds.ids["fraud"], "same_ticket"),
        (ds.ids["paused"], "while_paused"),
        (ds.ids["b1-1"], "too_fast"),
        *((rid, "top_run") for rid in top_run),
    }
    review(world, ds.ids["fraud"])
    review(world, ds.ids["paused"])  # already excluded as paused: listed once, as paused
    review(world, ds.ids["b1-1"], "dismissed")
    raw = score(world, "window", use_rollups=False)
    rolled = score(world, "window")
    assert (raw.raw_days, rolled.rollup_days) == (1, 1)
    check(rows_by_key(raw), EXPECTED_WINDOWS)
    assert raw.rows == rolled.rows and raw.excluded_ratings == rolled.excluded_ratings
    assert {(e.id, e.reason) for e in raw.excluded_ratings} == {
        (ds.ids["fraud"], "fraud"),
        (ds.ids["appeal"], "appeal"),
    }
    assert raw.exclusions == {"test_device": 3, "repeat": 2, "paused": 1, "fraud": 1, "appeal": 1}
    assert raw.cases_available and raw.policy_hash == Policy().hash

    units = rows_by_key(score(world, "unit"))
    assert units["hz/u1"]["ratings"] == 54 and units["hz/u1"]["score"] == 78.24  # 4225/54
    assert units["hz/u1"]["satisfaction_rate"] == 0.8889 and units["hz/u1"]["negatives"] == 6
    assert units["hz/u2"]["score"] == 75.56 and units["hx/"]["ratings"] == 5
    halls = rows_by_key(score(world, "hall"))
    hz = halls["hz/hz"]
    assert (hz["ratings"], hz["score"], hz["satisfaction_rate"], hz["excluded"]) == (
        84, 77.28, 0.9048, 8,  # 6491.67/84, 76/84
    )  # fmt: skip
    assert (hz["cases"], hz["handling_rate"], hz["on_time_rate"]) == (4, 0.75, 0.5)
    assert halls["hz/hz"]["name"] == "市民中心"
    staff = rows_by_key(score(world, "staff"))
    assert staff["hz/s3"]["ratings"] == 29 and staff["hz/s3"]["status"] == "insufficient_sample"
    assert staff["hz/"]["ratings"] == 1 and staff["hx/s1"]["ratings"] == 5
    assert staff["hz/s1"]["score"] == 76.88 and staff["hz/s1"]["name"] == "张三"
    items = rows_by_key(score(world, "item"))
    assert items["/i1"]["ratings"] == 59 and items["/i1"]["score"] == 77.97  # 4600/59
    assert items["/i2"]["ratings"] == 29 and items["/"]["ratings"] == 1
    only_hx = score(world, "window", hall="hx")
    assert [r.key for r in only_hx.rows] == ["z1"]


def test_policy_switches_change_results(world: World, tmp_path: Path) -> None:
    """Exclusions switched off count those ratings; min sample and points come from the policy."""
    p = tmp_path / "p.toml"
    p.write_text(
        "min_sample = 10\n[exclusions]\ntest_devices = false\nrepeats = false\n"
        "paused = false\nappeals = false\n[points]\ndefault = 20.0\n"
        'overrides = { a2 = 10.0, "hz/b1" = 50.0, "hx/b1" = 1.0 }\n'
    )
    policy = load_policy(p)
    rows = rows_by_key(score(world, "window", policy=policy, use_rollups=False))
    a1 = rows["hz/a1"]
    # + 3 test (5) + 2 repeats (5) + paused (1) + appeal (1) + same ticket (5), not reviewed
    assert a1["ratings"] == 48 and a1["levels"] == {"1": 4, "2": 3, "3": 5, "4": 10, "5": 26}
    assert a1["excluded"] == 0 and a1["score"] == 76.56  # 3675/48 = 76.5625
    assert a1["points"] == 15.31  # 76.5625 / 100 × 20
    assert rows["hz/a2"]["status"] == "scored" and rows["hz/a2"]["points"] == 8.21  # 82.14 × 10
    assert rows["hz/b1"]["allocated_points"] == 50.0 and rows["hz/b1"]["points"] == 37.78


def test_rollup_check_finds_late_ratings(world: World) -> None:
    """The check agrees after a build, and reports a rating that arrived after it."""
    with world.db.session() as s:
        build_rollups(s, world.influx, Period(DAY, DAY), TZ, Policy())
        assert check_rollups(s, world.influx, Period(DAY, DAY), TZ) == (1, [])
    late = Dataset(seqs={"k-b1": 100})
    late.rate("k-b1", "b1", T0 + 20_000_000, 4, 2)
    write_lines(world.url, late.lines())
    with world.db.session() as s:
        days, problems = check_rollups(s, world.influx, Period(DAY, DAY), TZ)
    assert days == 1 and [(p.window, p.level, p.rollup, p.raw) for p in problems] == [
        ("b1", 2, 3, 4)
    ]


def test_month_from_monthly_rollups_equals_raw(world: World) -> None:
    """A whole month read from the monthly rollups scores the same as from raw ratings."""
    march = period_of("month", DAY)
    with world.db.session() as s:
        build_rollups(s, world.influx, march, TZ, Policy())
        raw = compute_scores(
            "window", march, policy=Policy(), tz=TZ, influx=world.influx, session=s,
            use_rollups=False,
        )  # fmt: skip
        rolled = compute_scores(
            "staff", march, policy=Policy(), tz=TZ, influx=world.influx, session=s
        )
        rolled_windows = compute_scores(
            "window", march, policy=Policy(), tz=TZ, influx=world.influx, session=s
        )
    assert rolled.rollup_days == 31 and raw.raw_days == 31
    assert rolled_windows.rows == raw.rows
    assert rows_by_key(raw)["hz/a1"]["ratings"] == 43  # + same ticket (unreviewed), 1st, 3rd
    assert sum(r.ratings for r in rolled.rows) == sum(r.ratings for r in raw.rows)


def test_pause_from_device_status(world: World) -> None:
    """A retained `paused` status until the next `online` one also makes a pause."""
    lines = [
        status_line(
            DeviceStatus(v=1, device="k-z1", hall="hx", state=state, ts=t),  # type: ignore[arg-type]
            t * 1_000_000,
        )
        for state, t in [("paused", T0 + 1_100_000), ("offline", T0 + 1_150_000),
                         ("online", T0 + 1_300_000)]
    ]  # fmt: skip
    write_lines(world.url, "\n".join(lines) + "\n")
    z1 = rows_by_key(score(world, "window", hall="hx", use_rollups=False))["hx/z1"]
    assert (z1["ratings"], z1["exclusions"]) == (4, {"paused": 1})  # the one at T0 + 1200 s


def test_a_resume_event_ends_a_status_pause_at_the_device_time(world: World) -> None:
    """A kiosk back from a full disk while the broker is away: its `online` status arrives late
    (received time), its `resume` event carries the device's time, and that ends the pause."""
    from server.scores.source import read_pauses

    db = "pauses_resume"
    dev = "k-q1"
    httpx.post(f"{world.url}/query", params={"q": f'CREATE DATABASE "{db}"'}).raise_for_status()
    lines = [
        status_line(DeviceStatus(device=dev, hall="hx", state="paused", ts=T0), T0 * 1_000_000),
        event_line(
            ServiceEvent(
                id=uuid.uuid4(), device=dev, hall="hx", ts=T0 + 60_000, clock_synced=True,
                type="resume",
            )
        ),
        status_line(
            DeviceStatus(device=dev, hall="hx", state="online", ts=T0 + 600_000),
            (T0 + 600_000) * 1_000_000,
        ),
    ]  # fmt: skip
    resp = httpx.post(
        f"{world.url}/write", params={"db": db, "precision": "ns"}, content="\n".join(lines)
    )
    assert resp.status_code == 204, resp.text
    start = datetime.fromtimestamp(T0 / 1000 - 3600, UTC)
    end = datetime.fromtimestamp(T0 / 1000 + 3600, UTC)
    with InfluxClient(InfluxSettings(url=world.url, database=db)) as client:
        pauses = read_pauses(client, start, end)
    assert pauses.paused(dev, T0 + 30_000)  # while the disk was full
    assert not pauses.paused(dev, T0 + 120_000)  # pressed before the broker came back

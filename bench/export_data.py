"""A hall network's year for `bench export`: registry, daily rollups, raw ratings, cases, flags.

Every day holds what production holds: negative ratings with their cases (most closed,
some late or open, a few appeals approved), repeats the device flagged (`x-repeat`),
ratings made while a window was paused, test devices, and ratings reviewed as fraud.
Rolled-up days are written straight into the rollup tables (fast); raw days go into
influxd as the gateway writes them, with pause/resume events, to be rolled up or read raw.
"""

import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import insert

from protocol.messages import FLAG_REPEAT, EventType, RatingEvent, ServiceEvent
from server.cases.models import Case
from server.db.engine import Database
from server.db.models import Device, Hall, Unit, Window
from server.scores.models import RatingDaily, RatingFlag, RollupDay
from server.scores.periods import day_start
from storage.client import InfluxClient
from storage.lineproto import event_line, rating_line

HALLS = 10
UNITS_PER_HALL = 10
# Level mix of a window's day: mostly satisfied, a few negatives.
WEIGHTS = (1, 2, 5, 20, 72)
STAFF_PER_WINDOW = 2
TEST_DEVICE_EVERY = 100  # one device in 100 is a test device
PAUSED_SHARE = 0.03  # window-days with a 30-minute pause (12:00–12:30)
REPEAT_SHARE = 0.02  # ratings the device flagged as a repeat press
FRAUD_SHARE = 0.02  # window-days with one rating reviewed as fraud
APPEAL_SHARE = 0.03  # cases whose appeal was approved
START_S = 9 * 3600  # first rating of the day, local
STEP_S = 400  # seconds between a window's ratings


@dataclass(frozen=True, slots=True)
class Win:
    """One window of the registry with its device."""

    hall: str
    window: str
    device: str


@dataclass(slots=True)
class Built:
    """Counts of what was written."""

    ratings: int = 0
    cases: int = 0
    appeals: int = 0
    frauds: int = 0
    repeats: int = 0
    paused_window_days: int = 0
    rows: dict[str, int] = field(default_factory=dict)


def registry(db: Database, windows: int) -> list[Win]:
    """Create halls, units, windows and one device per window (1 in 100 a test device)."""
    out = []
    with db.session() as s:
        halls = [Hall(code=f"h{h:02d}", name=f"大厅 {h}") for h in range(HALLS)]
        units = [
            Unit(hall=halls[h], code=f"u{u:02d}", name=f"部门 {u}")
            for h in range(HALLS)
            for u in range(UNITS_PER_HALL)
        ]
        s.add_all([*halls, *units])
        for w in range(windows):
            hall = halls[w % HALLS]
            unit = units[(w % HALLS) * UNITS_PER_HALL + (w // HALLS) % UNITS_PER_HALL]
            win = Window(hall=hall, unit=unit, code=f"w{w:04d}", name=f"窗口 {w}")
            test = w % TEST_DEVICE_EVERY == 0
            s.add_all([win, Device(code=f"k-{w:04d}", hall=hall, window=win, test_device=test)])
            out.append(Win(hall.code, win.code, f"k-{w:04d}"))
        s.commit()
    return out


def _levels(rng: random.Random, per_day: int) -> list[int]:
    """A window's day of ratings (levels 1 … 5, in pressing order) around `per_day`."""
    n = max(0, int(rng.gauss(per_day, per_day / 6)))
    return rng.choices(range(1, 6), weights=WEIGHTS, k=n)


def _ts(day: date, tz: ZoneInfo, k: int) -> int:
    """Epoch ms of a window's k-th rating of `day`."""
    return int(day_start(day, tz).timestamp() * 1000) + (START_S + k * STEP_S) * 1000


def _paused(k: int) -> bool:
    """True if the k-th rating of a paused window-day falls in its 12:00–12:30 pause."""
    return 12 * 3600 <= START_S + k * STEP_S < 12 * 3600 + 1800


class Writer:
    """Writes days of the year: rollups into the database, raw ratings into influxd."""

    def __init__(self, db: Database, wins: list[Win], tz: ZoneInfo, per_day: int) -> None:
        """Prepare (seeded, so every run writes the same year)."""
        self.db = db
        self.wins = wins
        self.tz = tz
        self.per_day = per_day
        self.rng = random.Random(1)
        self.seqs: dict[str, int] = {}
        self.built = Built()

    def _id(self) -> str:
        """A new rating id."""
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def _day(self, day: date, ids: bool) -> Iterator[tuple[Win, int, int, bool, bool, str]]:
        """Each rating of `day`: window, k, level, repeat, paused, id ("" unless `ids`)."""
        rng = self.rng
        for win in self.wins:
            paused_day = rng.random() < PAUSED_SHARE
            self.built.paused_window_days += paused_day
            for k, level in enumerate(_levels(rng, self.per_day)):
                repeat = rng.random() < REPEAT_SHARE
                rid = self._id() if ids else ""
                yield win, k, level, repeat, paused_day and _paused(k), rid

    def _side(self, rows: dict[str, list[dict[str, Any]]], day: date, one: tuple[Any, ...]) -> None:
        """Cases of negatives, and now and then a rating reviewed as fraud."""
        win, k, level, repeat, paused, rid = one
        if level > 2 and not (level == 5 and k == 7):
            return
        rid = rid or self._id()
        ts = _ts(day, self.tz, k)
        at = datetime.fromtimestamp(ts / 1000, UTC)
        staff, item = f"{win.window}-s{k % STAFF_PER_WINDOW}", f"i{k % STAFF_PER_WINDOW}"
        common = {"hall": win.hall, "window": win.window, "device": win.device, "staff": staff}
        common |= {"item": item, "scale": 5, "level": level}
        if level <= 2:
            r = self.rng.random()
            appeal = r < APPEAL_SHARE
            state = "open" if r > 0.9 else "closed"
            closed = at + timedelta(days=1 if r < 0.85 else 6)
            rows["cases"].append(
                common
                | {
                    "rating_id": rid, "ticket": f"A{k:04d}",
                    "reasons": FLAG_REPEAT if repeat else "waiting",
                    "rating_ts": at, "opened": at, "due": day + timedelta(days=3),
                    "state": state, "closed": closed if state == "closed" else None,
                    "appeal_kind": "mistaken" if appeal else None,
                    "appeal_state": "approved" if appeal else None,
                    "updated": at, "notes": "",
                }
            )  # fmt: skip
            self.built.cases += 1
            self.built.appeals += appeal
        elif level == 5 and k == 7 and self.rng.random() < FRAUD_SHARE * 5:
            rows["flags"].append(
                common
                | {
                    "rating_id": rid, "rule": "burst", "detail": "", "day": day, "ts_ms": ts,
                    "ticket": "", "repeat": repeat, "paused": paused, "status": "fraud",
                    "created": at, "note": "",
                }
            )  # fmt: skip
            self.built.frauds += 1

    def rollup_days(self, days: list[date]) -> None:
        """Write `days` as built rollups (cells summed as the rollup job sums them)."""
        for day in days:
            cells: dict[tuple[Any, ...], int] = {}
            rows: dict[str, list[dict[str, Any]]] = {"cases": [], "flags": []}
            n = 0
            for one in self._day(day, ids=False):
                win, k, level, repeat, paused, _rid = one
                key = (win, k % STAFF_PER_WINDOW, level, repeat, paused)
                cells[key] = cells.get(key, 0) + 1
                self._side(rows, day, one)
                n += 1
                self.built.repeats += repeat
            daily = [
                {
                    "day": day, "hall": w.hall, "window": w.window, "device": w.device,
                    "staff": f"{w.window}-s{s}", "item": f"i{s}", "scale": 5, "level": lv,
                    "repeat": rep, "paused": pau, "n": cnt,
                }
                for (w, s, lv, rep, pau), cnt in cells.items()
            ]  # fmt: skip
            with self.db.session() as session:
                session.execute(insert(RatingDaily), daily)
                if rows["cases"]:
                    session.execute(insert(Case), rows["cases"])
                if rows["flags"]:
                    session.execute(insert(RatingFlag), rows["flags"])
                session.add(RollupDay(day=day, timezone=self.tz.key, ratings=n))
                session.commit()
            self.built.ratings += n

    def raw_days(self, influx: InfluxClient, days: list[date]) -> int:
        """Write `days` into influxd as the gateway does (ratings, pause events); cases too."""
        lines: list[str] = []
        total = 0
        for day in days:
            rows: dict[str, list[dict[str, Any]]] = {"cases": [], "flags": []}
            for one in self._day(day, ids=True):
                win, k, level, repeat, paused, rid = one
                self.seqs[win.device] = self.seqs.get(win.device, 0) + 1
                if paused and _paused(k - 1) is False:
                    lines += self._pause(win, day)
                ev = RatingEvent(
                    id=uuid.UUID(rid), device=win.device, hall=win.hall, window=win.window,
                    seq=self.seqs[win.device], ts=_ts(day, self.tz, k), clock_synced=True,
                    scale=5, level=level, input="touch", prompted=True,
                    staff=f"{win.window}-s{k % STAFF_PER_WINDOW}", ticket=f"A{k:04d}",
                    item=f"i{k % STAFF_PER_WINDOW}",
                    reasons=[FLAG_REPEAT] if repeat else (["waiting"] if level <= 2 else []),
                )  # fmt: skip
                lines.append(rating_line(ev))
                self._side(rows, day, one)
                self.built.repeats += repeat
                total += 1
                if len(lines) >= 20_000:
                    influx.write(lines)
                    lines.clear()
            with self.db.session() as session:
                if rows["cases"]:
                    session.execute(insert(Case), rows["cases"])
                if rows["flags"]:
                    session.execute(insert(RatingFlag), rows["flags"])
                session.commit()
        if lines:
            influx.write(lines)
        self.built.ratings += total
        return total

    def _pause(self, win: Win, day: date) -> list[str]:
        """The pause (12:00) and resume (12:30) events of a paused window-day."""
        noon = int(day_start(day, self.tz).timestamp() * 1000) + 12 * 3_600_000
        out = []
        changes: tuple[tuple[EventType, int], ...] = (
            ("pause", noon),
            ("resume", noon + 1_800_000),
        )
        for kind, ts in changes:
            ev = ServiceEvent(
                id=uuid.UUID(int=self.rng.getrandbits(128), version=4), device=win.device,
                hall=win.hall, window=win.window, ts=ts, clock_synced=True, type=kind,
            )  # fmt: skip
            out.append(event_line(ev))
        return out

"""Per-window rating counts of a time range, and what the scoring policy makes of them."""

from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from protocol.scales import level_label
from server.scores.policy import Policy, active_policy
from storage import queries
from storage.client import InfluxClient


@dataclass(slots=True)
class WindowCount:
    """Ratings of one window counted per (scale, level); satisfied and negative per the policy."""

    hall: str
    window: str
    counts: Counter[tuple[int, int]] = field(default_factory=Counter)
    policy: Policy = field(default_factory=Policy)

    @property
    def ratings(self) -> int:
        """Number of ratings."""
        return sum(self.counts.values())

    @property
    def levels(self) -> dict[int, int]:
        """Number of ratings per level number (all scales added up)."""
        out: Counter[int] = Counter()
        for (_scale, level), n in self.counts.items():
            out[level] += n
        return dict(sorted(out.items()))

    @property
    def scales(self) -> list[int]:
        """The scales the window's ratings were given on."""
        return sorted({scale for scale, _level in self.counts})

    @property
    def satisfied(self) -> int:
        """Number of ratings the policy counts as satisfied."""
        return sum(n for (s, lv), n in self.counts.items() if self.policy.satisfied(s, lv))

    @property
    def negatives(self) -> int:
        """Number of ratings the policy counts as negative."""
        return sum(n for (s, lv), n in self.counts.items() if self.policy.negative(s, lv))

    @property
    def satisfaction_rate(self) -> float | None:
        """Share of satisfied ratings in [0, 1]; None without ratings."""
        total = self.ratings
        return self.satisfied / total if total else None

    @property
    def score(self) -> float | None:
        """Mean rating index (0–100, the policy's index); None without ratings."""
        total = self.ratings
        if not total:
            return None
        return sum(self.policy.index(s, lv) * n for (s, lv), n in self.counts.items()) / total

    def label_counts(self) -> dict[str, int]:
        """Number of ratings per zh level label (the same label means the same on every scale)."""
        out: Counter[str] = Counter()
        for (scale, level), n in self.counts.items():
            out[level_label(scale, level, "zh")] += n
        return dict(out)


def day_bounds(tz: ZoneInfo, now: datetime | None = None) -> tuple[date, datetime, datetime]:
    """Return today's date in `tz` and its local midnight and next local midnight."""
    local_now = (now or datetime.now(tz)).astimezone(tz)
    today = local_now.date()
    start = datetime.combine(today, time(0), tzinfo=tz)
    end = datetime.combine(today + timedelta(days=1), time(0), tzinfo=tz)
    return today, start, end


def counts_between(
    client: InfluxClient,
    start: datetime,
    end: datetime,
    hall: str | None = None,
    policy: Policy | None = None,
) -> list[WindowCount]:
    """Count ratings per window, scale and level with start <= time < end (optionally one hall)."""
    pol = policy or active_policy()
    found = queries.rating_counts(client, start, end, hall)
    return [
        WindowCount(hall=key[0], window=key[1], counts=found[key], policy=pol)
        for key in sorted(found)
    ]


def today_counts(
    client: InfluxClient,
    tz: ZoneInfo,
    *,
    hall: str | None = None,
    now: datetime | None = None,
    policy: Policy | None = None,
) -> list[WindowCount]:
    """Count today's ratings (local midnight in `tz` until the next) per window."""
    _today, start, end = day_bounds(tz, now)
    return counts_between(client, start, end, hall, policy)

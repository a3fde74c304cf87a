"""Score tables: daily rollups of rating counts, the days rolled up, and fraud flags."""

from datetime import date, datetime

from sqlalchemy import BigInteger, Boolean, Date, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from server.db.models import CODE_LEN, Base, UtcDateTime, utcnow

FLAG_STATES = ("pending", "fraud", "dismissed")
RULES = ("too_fast", "top_run", "while_paused", "same_ticket")


class RatingDaily(Base):
    """One local day's ratings counted per hall, window, device, staff, item, scale, level, flags.

    `staff` and `item` are "" when the rating had none. `repeat` is the device's x-repeat
    flag, `paused` whether the window was paused at the press.
    """

    __tablename__ = "rating_daily"
    __table_args__ = (Index("ix_rating_daily_day", "day"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    day: Mapped[date] = mapped_column(Date)
    hall: Mapped[str] = mapped_column(String(CODE_LEN))
    window: Mapped[str] = mapped_column(String(CODE_LEN))
    device: Mapped[str] = mapped_column(String(CODE_LEN))
    staff: Mapped[str] = mapped_column(String(CODE_LEN), default="")
    item: Mapped[str] = mapped_column(String(CODE_LEN), default="")
    scale: Mapped[int] = mapped_column(Integer)
    level: Mapped[int] = mapped_column(Integer)
    repeat: Mapped[bool] = mapped_column(Boolean, default=False)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    n: Mapped[int] = mapped_column(Integer)


class RatingMonthly(Base):
    """The daily rollups of one month added up (refreshed whenever a day of it is rebuilt).

    Used for whole months whose every day is rolled up; keeps a year at 12 rows per cell.
    """

    __tablename__ = "rating_monthly"
    __table_args__ = (Index("ix_rating_monthly_month", "month"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    month: Mapped[date] = mapped_column(Date)
    hall: Mapped[str] = mapped_column(String(CODE_LEN))
    window: Mapped[str] = mapped_column(String(CODE_LEN))
    device: Mapped[str] = mapped_column(String(CODE_LEN))
    staff: Mapped[str] = mapped_column(String(CODE_LEN), default="")
    item: Mapped[str] = mapped_column(String(CODE_LEN), default="")
    scale: Mapped[int] = mapped_column(Integer)
    level: Mapped[int] = mapped_column(Integer)
    repeat: Mapped[bool] = mapped_column(Boolean, default=False)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    n: Mapped[int] = mapped_column(Integer)


class RollupDay(Base):
    """A local day whose ratings are in `rating_daily` (built from the raw ratings)."""

    __tablename__ = "rollup_days"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    timezone: Mapped[str] = mapped_column(String(CODE_LEN))
    ratings: Mapped[int] = mapped_column(Integer)
    built: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class RatingFlag(Base):
    """A rating a fraud detector flagged; reviewed by a person, never deleted."""

    __tablename__ = "rating_flags"
    __table_args__ = (UniqueConstraint("rating_id", "rule"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rating_id: Mapped[str] = mapped_column(String(36), index=True)
    rule: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(Text, default="")
    day: Mapped[date] = mapped_column(Date, index=True)
    ts_ms: Mapped[int] = mapped_column(BigInteger)
    hall: Mapped[str] = mapped_column(String(CODE_LEN), index=True)
    window: Mapped[str] = mapped_column(String(CODE_LEN))
    device: Mapped[str] = mapped_column(String(CODE_LEN))
    staff: Mapped[str] = mapped_column(String(CODE_LEN), default="")
    item: Mapped[str] = mapped_column(String(CODE_LEN), default="")
    ticket: Mapped[str] = mapped_column(String(CODE_LEN), default="")
    scale: Mapped[int] = mapped_column(Integer)
    level: Mapped[int] = mapped_column(Integer)
    repeat: Mapped[bool] = mapped_column(Boolean, default=False)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    created: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    reviewed_by: Mapped[str | None] = mapped_column(String(CODE_LEN))
    reviewed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    note: Mapped[str] = mapped_column(Text, default="")

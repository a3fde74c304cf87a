"""Case tables: cases, their history, the holiday calendar, the poller watermark, the outbox."""

from datetime import date, datetime

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Date,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from server.db.models import CODE_LEN, NAME_LEN, Base, UtcDateTime, utcnow

STATES = ("open", "contacted", "rectified", "closed")
APPEAL_KINDS = ("mistaken", "malicious")
APPEAL_STATES = ("pending", "approved", "rejected")


class Case(Base):
    """A negative rating's follow-up case (差评工单); one per rating (`rating_id` is unique)."""

    __tablename__ = "cases"
    __table_args__ = (
        CheckConstraint("state IN ('open', 'contacted', 'rectified', 'closed')", name="state"),
        CheckConstraint(
            "appeal_kind IS NULL OR appeal_kind IN ('mistaken', 'malicious')", name="appeal_kind"
        ),
        CheckConstraint(
            "appeal_state IS NULL OR appeal_state IN ('pending', 'approved', 'rejected')",
            name="appeal_state",
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rating_id: Mapped[str] = mapped_column(String(36), unique=True)
    hall: Mapped[str] = mapped_column(String(CODE_LEN), index=True)
    window: Mapped[str] = mapped_column(String(CODE_LEN))
    device: Mapped[str] = mapped_column(String(CODE_LEN))
    level: Mapped[int] = mapped_column(Integer)
    scale: Mapped[int] = mapped_column(Integer)
    staff: Mapped[str | None] = mapped_column(String(CODE_LEN))
    ticket: Mapped[str | None] = mapped_column(String(CODE_LEN))
    item: Mapped[str | None] = mapped_column(String(CODE_LEN))
    reasons: Mapped[str] = mapped_column(String(500), default="")
    rating_ts: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    opened: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    due: Mapped[date] = mapped_column(Date, index=True)
    state: Mapped[str] = mapped_column(String(16), default="open", index=True)
    appeal_kind: Mapped[str | None] = mapped_column(String(16))
    appeal_reason: Mapped[str | None] = mapped_column(Text)
    appeal_state: Mapped[str | None] = mapped_column(String(16))
    appeal_by: Mapped[str | None] = mapped_column(String(CODE_LEN))
    appeal_filed: Mapped[datetime | None] = mapped_column(UtcDateTime)
    appeal_decided_by: Mapped[str | None] = mapped_column(String(CODE_LEN))
    appeal_decided: Mapped[datetime | None] = mapped_column(UtcDateTime)
    closed: Mapped[datetime | None] = mapped_column(UtcDateTime)
    overdue_notified: Mapped[datetime | None] = mapped_column(UtcDateTime)
    updated: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    notes: Mapped[str] = mapped_column(Text, default="")

    events: Mapped[list["CaseEvent"]] = relationship(
        back_populates="case", order_by="CaseEvent.id", cascade="all, delete-orphan"
    )


class CaseEvent(Base):
    """One step in a case's history: who, when, what, the states before and after, a note."""

    __tablename__ = "case_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    case_id: Mapped[int] = mapped_column(ForeignKey("cases.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    actor: Mapped[str | None] = mapped_column(String(CODE_LEN))
    action: Mapped[str] = mapped_column(String(32))
    from_state: Mapped[str | None] = mapped_column(String(16))
    to_state: Mapped[str | None] = mapped_column(String(16))
    note: Mapped[str] = mapped_column(Text, default="")

    case: Mapped[Case] = relationship(back_populates="events")


class Holiday(Base):
    """A calendar day: a holiday (`working` false) or a make-up working day (调休, `working` true).

    `hall` None applies to every hall; a row for a hall overrides the general row of that date.
    """

    __tablename__ = "holidays"
    __table_args__ = (UniqueConstraint("date", "hall"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    date: Mapped[date] = mapped_column(Date, index=True)
    hall: Mapped[str | None] = mapped_column(String(CODE_LEN))
    working: Mapped[bool] = mapped_column(Boolean, default=False)
    name: Mapped[str] = mapped_column(String(NAME_LEN), default="")


class CasePoller(Base):
    """The newest InfluxDB point time a case poller has scanned up to."""

    __tablename__ = "case_pollers"

    name: Mapped[str] = mapped_column(String(CODE_LEN), primary_key=True)
    watermark: Mapped[datetime] = mapped_column(UtcDateTime)


class WebhookDelivery(Base):
    """One case event owed to one webhook URL (the outbox); kept until delivered or given up."""

    __tablename__ = "webhook_outbox"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    delivery_id: Mapped[str] = mapped_column(String(36), index=True)
    event: Mapped[str] = mapped_column(String(32))
    case_id: Mapped[int | None] = mapped_column(Integer, index=True)
    url: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    delivered: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    gave_up: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_error: Mapped[str] = mapped_column(String(500), default="")

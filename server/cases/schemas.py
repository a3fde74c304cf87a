"""Request and response bodies of the cases API."""

import datetime as dt
from datetime import date, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

State = Literal["open", "contacted", "rectified", "closed"]
Step = Literal["contacted", "rectified", "closed"]
AppealKind = Literal["mistaken", "malicious"]
AppealState = Literal["pending", "approved", "rejected"]


class _In(BaseModel):
    """A request body: unknown keys are refused."""

    model_config = ConfigDict(extra="forbid")


class CaseEventOut(BaseModel):
    """One step of a case's history."""

    at: datetime = Field(title="When (UTC)")
    actor: str | None = Field(title="Who (None: the system)")
    action: str = Field(title="opened, contacted, rectified, closed, note, appeal_*, overdue")
    from_state: str | None = Field(title="State before")
    to_state: str | None = Field(title="State after")
    note: str = Field(title="Note")


class CaseOut(BaseModel):
    """A negative-rating case."""

    id: int = Field(title="Case number")
    rating_id: str = Field(title="The rating's UUID")
    hall: str = Field(title="Hall")
    window: str = Field(title="Window")
    device: str = Field(title="Evaluator")
    level: int = Field(title="Level given (1 = worst)")
    scale: int = Field(title="Scale (3, 4 or 5 keys)")
    staff: str | None = Field(title="Clerk's staff number")
    ticket: str | None = Field(title="Queue ticket")
    item: str | None = Field(title="Service item")
    reasons: str = Field(title="Reason codes, comma-separated")
    rating_ts: datetime = Field(title="Press time (UTC)")
    opened: datetime = Field(title="When the case opened (UTC)")
    due: date = Field(title="Deadline (last working day, hall's calendar)")
    overdue: bool = Field(title="Not closed and past the deadline")
    state: State = Field(title="open, contacted, rectified or closed")
    appeal_kind: AppealKind | None = Field(title="mistaken (误评) or malicious (恶意差评)")
    appeal_reason: str | None = Field(title="Why the rating should not count")
    appeal_state: AppealState | None = Field(title="pending, approved or rejected")
    appeal_by: str | None = Field(title="Who filed the appeal")
    appeal_decided_by: str | None = Field(title="Who decided the appeal")
    closed: datetime | None = Field(title="When the case closed (UTC)")
    notes: str = Field(title="Notes")
    allowed: list[str] = Field(title="What the current user may do now")


class CaseDetail(CaseOut):
    """A case with its history."""

    events: list[CaseEventOut] = Field(title="History, oldest first")


class CaseList(BaseModel):
    """One page of cases."""

    total: int = Field(title="Cases matching the filters")
    cases: list[CaseOut] = Field(title="This page, newest rating first")


class CaseSummary(BaseModel):
    """What the hall board's alert shows: cases still to handle, overdue ones, the newest."""

    unclosed: int = Field(title="Cases not closed yet")
    overdue: int = Field(title="Unclosed cases past their deadline")
    newest: CaseOut | None = Field(title="The newest open case (rating time)")


class TransitionIn(_In):
    """Move a case one step."""

    to: Step = Field(title="The next state: contacted, rectified or closed")
    note: str = Field(default="", max_length=4000, title="What was done (回访/整改 record)")


class NoteIn(_In):
    """A note on a case."""

    note: str = Field(min_length=1, max_length=4000, title="Note")


class AppealIn(_In):
    """An appeal against counting the rating."""

    kind: AppealKind = Field(title="mistaken (误评) or malicious (恶意差评)")
    reason: str = Field(min_length=1, max_length=4000, title="Reason and evidence")


class DecisionIn(_In):
    """The office's decision on an appeal."""

    approve: bool = Field(title="True approves (excludes the rating), False rejects")
    note: str = Field(default="", max_length=4000, title="Reason of the decision")


class HolidayIn(_In):
    """A calendar day: a holiday, or a make-up working day (调休)."""

    date: dt.date = Field(title="The day")
    hall: str | None = Field(default=None, max_length=64, title="Only this hall (None: all)")
    working: bool = Field(default=False, title="True for a make-up working day (调休)")
    name: str = Field(default="", max_length=200, title="Name, e.g. 国庆节")


class HolidayOut(BaseModel):
    """A calendar row."""

    date: dt.date = Field(title="The day")
    hall: str | None = Field(title="Only this hall (None: all)")
    working: bool = Field(title="True for a make-up working day (调休)")
    name: str = Field(title="Name")


class HolidayImport(BaseModel):
    """The result of a calendar CSV import."""

    rows: int = Field(title="Rows stored")
    recomputed: int = Field(title="Open cases whose deadline changed")


class CaseError(BaseModel):
    """A refused request."""

    error: str = Field(title="Short code")
    detail: str = Field(title="Message")

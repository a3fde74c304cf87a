"""Export jobs: rows of `export_jobs` (who, what, state, file, error), run in a background thread.

A job is a database row from the moment it is asked for, so the list survives a restart.
A job that was queued or running when the server stopped (a crash, SIGKILL, power cut) is
marked failed with the reason `INTERRUPTED` when the server starts again, never left running.
"""

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import CheckConstraint, Integer, String, Text, select, update
from sqlalchemy.orm import Mapped, mapped_column

from server.db.engine import Database
from server.db.models import CODE_LEN, Base, UtcDateTime, utcnow

log = logging.getLogger(__name__)

JobState = Literal["queued", "running", "done", "failed"]
UNFINISHED = ("queued", "running")
INTERRUPTED = (
    "服务器在导出期间重启，请重新导出 / the server restarted during the export: start it again"
)
PROGRESS_EVERY_S = 0.5  # progress is written at most this often


class ExportJobRow(Base):
    """One export made through the API, as stored."""

    __tablename__ = "export_jobs"
    __table_args__ = (
        CheckConstraint("state IN ('queued', 'running', 'done', 'failed')", name="state"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[int] = mapped_column(Integer, index=True)
    owner_name: Mapped[str] = mapped_column(String(CODE_LEN))
    state: Mapped[str] = mapped_column(String(16), index=True)
    level: Mapped[str] = mapped_column(String(16))
    format: Mapped[str] = mapped_column(String(8))
    period_from: Mapped[str] = mapped_column(String(10))
    period_to: Mapped[str] = mapped_column(String(10))
    hall: Mapped[str | None] = mapped_column(String(CODE_LEN))
    done_days: Mapped[int] = mapped_column(Integer, default=0)
    total_days: Mapped[int] = mapped_column(Integer, default=0)
    file: Mapped[str | None] = mapped_column(String(255))
    rows: Mapped[int | None] = mapped_column(Integer)
    sha256: Mapped[str | None] = mapped_column(String(64))
    error: Mapped[str | None] = mapped_column(Text)
    created: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow, index=True)
    updated: Mapped[datetime] = mapped_column(UtcDateTime, default=utcnow)


class ExportJob(BaseModel):
    """The state of one export made through the API."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(title="Job id")
    owner: int = Field(title="User id of who asked for it")
    owner_name: str = Field(default="", title="Username of who asked for it")
    state: JobState = Field(title="queued, running, done or failed")
    level: str = Field(title="Entity level")
    format: str = Field(title="csv, xlsx or json")
    period_from: str = Field(title="First day")
    period_to: str = Field(title="Last day (inclusive)")
    hall: str | None = Field(title="Only this hall")
    done_days: int = Field(default=0, title="Days scored so far")
    total_days: int = Field(default=0, title="Days in the period")
    progress: float = Field(default=0.0, title="0–1")
    file: str | None = Field(default=None, title="Data file name when done")
    rows: int | None = Field(default=None, title="Rows when done")
    sha256: str | None = Field(default=None, title="sha256 of the data file when done")
    error: str | None = Field(default=None, title="Why it failed")
    created: str = Field(title="When it was asked for (UTC)")


@dataclass
class JobWork:
    """What a job thread runs: write the file, report progress, return (file, rows, sha256)."""

    run: Callable[[Callable[[int, int], None]], tuple[Path, int, str]]


def _out(row: ExportJobRow) -> ExportJob:
    """Return the API form of a stored job."""
    total = row.total_days
    progress = 1.0 if row.state == "done" else (row.done_days / total if total else 0.0)
    return ExportJob(
        id=row.id, owner=row.owner, owner_name=row.owner_name, state=row.state,
        level=row.level, format=row.format, period_from=row.period_from,
        period_to=row.period_to, hall=row.hall, done_days=row.done_days, total_days=total,
        progress=progress, file=row.file, rows=row.rows, sha256=row.sha256, error=row.error,
        created=row.created.isoformat(timespec="seconds"),
    )  # fmt: skip


def fail_interrupted(db: Database) -> int:
    """Mark the jobs a stopped server left queued or running as failed; return how many."""
    with db.session() as session:
        n = session.execute(
            update(ExportJobRow)
            .where(ExportJobRow.state.in_(UNFINISHED))
            .values(state="failed", error=INTERRUPTED, updated=utcnow())
        ).rowcount  # type: ignore[attr-defined]
        session.commit()
    if n:
        log.warning("%d export jobs were interrupted by a server restart: marked failed", n)
    return int(n)


class JobBoard:
    """The export jobs of one server, stored in its database (newest `keep` are kept)."""

    def __init__(self, keep: int, export_dir: Path) -> None:
        """Remember how many finished jobs to keep and where their files are."""
        self.keep = keep
        self.export_dir = export_dir

    def file_of(self, job_id: str, name: str) -> Path:
        """Return where the data file `name` of a job is written."""
        return self.export_dir / job_id / name

    def submit(self, db: Database, job: ExportJob, work: JobWork) -> ExportJob:
        """Store `job`, forget the oldest finished ones beyond `keep`, start its thread."""
        with db.session() as session:
            session.add(
                ExportJobRow(
                    id=job.id, owner=job.owner, owner_name=job.owner_name, state="queued",
                    level=job.level, format=job.format, period_from=job.period_from,
                    period_to=job.period_to, hall=job.hall, done_days=0,
                    total_days=job.total_days, created=utcnow(), updated=utcnow(),
                )
            )  # fmt: skip
            session.flush()
            old = session.scalars(
                select(ExportJobRow)
                .where(ExportJobRow.state.not_in(UNFINISHED))
                .order_by(ExportJobRow.created.desc(), ExportJobRow.id)
                .offset(self.keep)
            ).all()
            for row in old:
                session.delete(row)
            session.commit()
        threading.Thread(target=self._run, args=(db, job.id, work), daemon=True).start()
        return self.get(db, job.id) or job

    def _update(self, db: Database, job_id: str, **changes: object) -> None:
        """Apply `changes` to a stored job."""
        with db.session() as session:
            session.execute(
                update(ExportJobRow)
                .where(ExportJobRow.id == job_id)
                .values(updated=utcnow(), **changes)
            )
            session.commit()

    def _run(self, db: Database, job_id: str, work: JobWork) -> None:
        """Run one job."""
        self._update(db, job_id, state="running")
        last = 0.0

        def progress(done: int, total: int) -> None:
            nonlocal last
            now = time.monotonic()
            if now - last >= PROGRESS_EVERY_S or done == total:
                last = now
                self._update(db, job_id, done_days=done, total_days=total)

        try:
            path, rows, sha = work.run(progress)
        except Exception as exc:
            log.exception("export job %s failed", job_id)
            self._update(db, job_id, state="failed", error=str(exc)[:2000])
            return
        self._update(db, job_id, state="done", file=path.name, rows=rows, sha256=sha)

    def get(self, db: Database, job_id: str) -> ExportJob | None:
        """Return a job."""
        with db.session() as session:
            row = session.get(ExportJobRow, job_id)
            return None if row is None else _out(row)

    def list(self, db: Database, owner: int | None, limit: int) -> list[ExportJob]:
        """Return the newest jobs, of `owner` only unless None."""
        q = select(ExportJobRow).order_by(ExportJobRow.created.desc(), ExportJobRow.id)
        if owner is not None:
            q = q.where(ExportJobRow.owner == owner)
        with db.session() as session:
            return [_out(r) for r in session.scalars(q.limit(limit))]

    def path(self, db: Database, job_id: str) -> Path | None:
        """Return the data file of a finished job (under the export directory)."""
        with db.session() as session:
            row = session.get(ExportJobRow, job_id)
            if row is None or row.state != "done" or row.file is None:
                return None
            return self.file_of(row.id, row.file)


def new_job_id() -> str:
    """Return a fresh job id."""
    return uuid.uuid4().hex


def utc_now() -> str:
    """Return the current UTC time in ISO form."""
    return datetime.now(UTC).isoformat(timespec="seconds")

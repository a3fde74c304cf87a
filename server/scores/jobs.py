"""Export jobs run in a background thread, with progress a page can poll."""

import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

log = logging.getLogger(__name__)

JobState = Literal["queued", "running", "done", "failed"]


class ExportJob(BaseModel):
    """The state of one export made through the API."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(title="Job id")
    owner: int = Field(title="User id of who asked for it")
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


class JobBoard:
    """The export jobs of one server (newest `keep` are kept)."""

    def __init__(self, keep: int) -> None:
        """Start empty."""
        self.keep = keep
        self._jobs: OrderedDict[str, ExportJob] = OrderedDict()
        self._files: dict[str, Path] = {}
        self._lock = threading.Lock()

    def submit(self, job: ExportJob, work: JobWork) -> ExportJob:
        """Register `job` and start its thread."""
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > self.keep:
                old, _ = self._jobs.popitem(last=False)
                self._files.pop(old, None)
        threading.Thread(target=self._run, args=(job.id, work), daemon=True).start()
        return job

    def _update(self, job_id: str, **changes: object) -> None:
        """Apply `changes` to a job."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                self._jobs[job_id] = job.model_copy(update=changes)

    def _run(self, job_id: str, work: JobWork) -> None:
        """Run one job."""
        self._update(job_id, state="running")

        def progress(done: int, total: int) -> None:
            self._update(
                job_id, done_days=done, total_days=total, progress=done / total if total else 1.0
            )

        try:
            path, rows, sha = work.run(progress)
        except Exception as exc:
            log.exception("export job %s failed", job_id)
            self._update(job_id, state="failed", error=str(exc))
            return
        with self._lock:
            self._files[job_id] = path
        self._update(job_id, state="done", progress=1.0, file=path.name, rows=rows, sha256=sha)

    def get(self, job_id: str) -> ExportJob | None:
        """Return a job."""
        with self._lock:
            return self._jobs.get(job_id)

    def path(self, job_id: str) -> Path | None:
        """Return the data file of a finished job."""
        with self._lock:
            return self._files.get(job_id)


def new_job_id() -> str:
    """Return a fresh job id."""
    return uuid.uuid4().hex


def utc_now() -> str:
    """Return the current UTC time in ISO form."""
    return datetime.now(UTC).isoformat(timespec="seconds")

"""One export from start to end: scores for a period, then the file and its manifest."""

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy.orm import Session

from server.scores.engine import ScoreResult, compute_scores
from server.scores.export import write_export
from server.scores.periods import Period
from server.scores.policy import Policy
from storage.client import InfluxClient

log = logging.getLogger(__name__)


def export_scores(
    *,
    session: Session,
    influx: InfluxClient,
    tz: ZoneInfo,
    policy: Policy,
    period: Period,
    level: str,
    fmt: str,
    out: Path,
    hall: str | None = None,
    lang: str = "zh",
    progress: Callable[[int, int], None] | None = None,
) -> tuple[ScoreResult, dict[str, Any]]:
    """Score `period` at `level` and write `out` (+ manifest); return the result and manifest."""
    result = compute_scores(
        level,
        period,
        policy=policy,
        tz=tz,
        influx=influx,
        session=session,
        hall=hall,
        progress=progress,
    )
    manifest = write_export(result, policy, fmt, out, lang)
    log.info(
        "export %s %s %s..%s: %d rows, sha256 %s",
        out,
        level,
        period.first,
        period.last,
        manifest["rows"],
        manifest["sha256"],
    )
    return result, manifest

"""Plausibility of device times, shared by the kiosk (hold back) and the gateway (reject)."""

from enum import StrEnum

TS_MIN_MS = 1_577_836_800_000  # 2020-01-01T00:00:00Z
MAX_FUTURE_MS = 5 * 60 * 1000


class TsVerdict(StrEnum):
    """Result of checking a device time against the receiver's clock."""

    OK = "ok"
    TOO_OLD = "ts_before_2020"
    IN_FUTURE = "ts_in_future"


def check_ts(ts_ms: int, now_ms: int) -> TsVerdict:
    """Classify a press time: before 2020 or more than 5 minutes ahead is rejected."""
    if ts_ms < TS_MIN_MS:
        return TsVerdict.TOO_OLD
    if ts_ms > now_ms + MAX_FUTURE_MS:
        return TsVerdict.IN_FUTURE
    return TsVerdict.OK


def is_plausible(ts_ms: int) -> bool:
    """Return True if a device's own time can be true at all (not before 2020)."""
    return ts_ms >= TS_MIN_MS

"""Fraud detectors on one day's raw ratings: flags for a person to review, never deletions."""

import itertools
from collections import defaultdict
from dataclasses import dataclass

from server.scores.policy import Fraud
from server.scores.source import RawRating


@dataclass(frozen=True, slots=True)
class Flag:
    """A rating one detector found suspicious."""

    rating: RawRating
    rule: str
    detail: str


def detect(ratings: list[RawRating], rules: Fraud) -> list[Flag]:
    """Return the flags of one day's ratings (sorted by time), detector by detector.

    - too_fast: a rating less than `min_service_s` after the previous one on the device
      (repeats the device flagged itself are left out);
    - top_run: `top_run` or more top ratings in a row on a device, none prompted;
    - while_paused: a rating made while the window was paused;
    - same_ticket: a second or later rating on one ticket of a hall.
    """
    flags: list[Flag] = []
    by_device: dict[str, list[RawRating]] = defaultdict(list)
    for r in ratings:
        if not r.repeat:
            by_device[r.device].append(r)
    for device in sorted(by_device):
        seq = by_device[device]
        if rules.min_service_s > 0:
            limit = rules.min_service_s * 1000
            for prev, cur in itertools.pairwise(seq):
                gap = cur.ts_ms - prev.ts_ms
                if gap < limit:
                    detail = (
                        f"{gap / 1000:.1f} s after rating {prev.id} (min {rules.min_service_s} s)"
                    )
                    flags.append(Flag(cur, "too_fast", detail))
        run: list[RawRating] = []
        runs: list[list[RawRating]] = []
        for r in seq:
            if r.level == r.scale and not r.prompted:
                run.append(r)
            else:
                runs.append(run)
                run = []
        runs.append(run)
        for found in runs:
            if len(found) >= rules.top_run:
                detail = f"{len(found)} top ratings in a row, no prompt"
                flags += [Flag(x, "top_run", detail) for x in found]
    if rules.while_paused:
        flags += [Flag(r, "while_paused", "window paused") for r in ratings if r.paused]
    if rules.same_ticket:
        first: dict[tuple[str, str], RawRating] = {}
        for r in ratings:
            if not r.ticket:
                continue
            seen = first.setdefault((r.hall, r.ticket), r)
            if seen is not r:
                flags.append(Flag(r, "same_ticket", f"ticket {r.ticket} rated by {seen.id} before"))
    return flags

"""Export files (CSV with BOM, XLSX, JSON) of a score result, each with its manifest.

The data file depends only on the data and the policy (same inputs ⇒ same bytes); the
generation time and the file's sha256 go into the manifest next to it.
"""

import csv
import hashlib
import io
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import xlsxwriter  # type: ignore[import-untyped]

from server.scores.engine import ScoreResult, ScoreRow
from server.scores.policy import Policy

ExportFormat = Literal["csv", "xlsx", "json"]
FORMATS: tuple[str, ...] = ("csv", "xlsx", "json")
# A fixed document date: the XLSX bytes must not depend on when it was made.
XLSX_DATE = datetime(2020, 1, 1)

# (code, 中文, English) of each column; levels on the five-key scale.
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("level", "层级", "Level"),
    ("hall", "大厅", "Hall"),
    ("key", "编码", "Code"),
    ("name", "名称", "Name"),
    ("unit", "部门", "Unit"),
    ("ratings", "有效评价数", "Counted ratings"),
    ("level_5", "非常满意", "Very satisfied"),
    ("level_4", "满意", "Satisfied"),
    ("level_3", "基本满意", "Fairly satisfied"),
    ("level_2", "不满意", "Dissatisfied"),
    ("level_1", "非常不满意", "Very dissatisfied"),
    ("satisfied", "满意数", "Satisfied (fairly or better)"),
    ("satisfaction_rate", "满意率", "Satisfaction rate"),
    ("score", "得分", "Score"),
    ("negatives", "差评数", "Negative ratings"),
    ("status", "状态", "Status"),
    ("excluded", "剔除数", "Excluded"),
    ("exclusions", "剔除原因", "Exclusion reasons"),
    ("cases", "差评工单数", "Cases"),
    ("cases_closed", "已办结", "Cases closed"),
    ("cases_closed_on_time", "按时办结", "Closed on time"),
    ("handling_rate", "办结率", "Handling rate"),
    ("on_time_rate", "按时办结率", "On-time rate"),
    ("allocated_points", "分值", "Allocated points"),
    ("points", "考核得分", "Assessment points"),
)
RATE_COLUMNS = frozenset({"satisfaction_rate", "handling_rate", "on_time_rate"})
DECIMAL_COLUMNS = frozenset({"score", "allocated_points", "points"})


def header(lang: str = "zh") -> list[str]:
    """Return the column names: Chinese (or English) with the code in parentheses."""
    return [f"{en if lang == 'en' else zh}({code})" for code, zh, en in COLUMNS]


def flat(row: ScoreRow) -> dict[str, Any]:
    """Return a row's cells by column code (levels spread, exclusions as text)."""
    d = row.model_dump()
    for lv in ("1", "2", "3", "4", "5"):
        d[f"level_{lv}"] = row.levels.get(lv, 0)
    d["exclusions"] = ";".join(f"{k}:{v}" for k, v in row.exclusions.items())
    return {code: d[code] for code, _zh, _en in COLUMNS}


def csv_bytes(result: ScoreResult, lang: str = "zh") -> bytes:
    """Return the CSV (UTF-8 with BOM, CRLF)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(header(lang))
    for row in result.rows:
        w.writerow(["" if v is None else v for v in flat(row).values()])
    return buf.getvalue().encode("utf-8-sig")


def json_bytes(result: ScoreResult) -> bytes:
    """Return the JSON list of rows (UTF-8, one row object per entity)."""
    rows = [r.model_dump() for r in result.rows]
    return (json.dumps(rows, ensure_ascii=False, indent=1) + "\n").encode()


def xlsx_bytes(result: ScoreResult, policy: Policy, lang: str = "zh") -> bytes:
    """Return the XLSX: formatted, frozen header; then how it was made and what was excluded."""
    buf = io.BytesIO()
    wb = xlsxwriter.Workbook(buf, {"in_memory": True})
    wb.set_properties({"title": "WindowRate", "author": "WindowRate", "created": XLSX_DATE})
    head = wb.add_format(
        {"bold": True, "text_wrap": True, "valign": "top", "bg_color": "#DDEBF7", "border": 1}
    )
    pct = wb.add_format({"num_format": "0.00%"})
    dec = wb.add_format({"num_format": "0.00"})
    ws = wb.add_worksheet("评分" if lang == "zh" else "Scores")
    names = header(lang)
    for c, name in enumerate(names):
        ws.write_string(0, c, name, head)
        ws.set_column(c, c, max(10, min(28, len(name) + 2)))
    ws.set_row(0, 36)
    for r, row in enumerate(result.rows, 1):
        for c, (code, value) in enumerate(flat(row).items()):
            if value is None:
                ws.write_blank(r, c, None)
            elif isinstance(value, bool | str):
                ws.write_string(r, c, str(value))
            elif code in RATE_COLUMNS:
                ws.write_number(r, c, value, pct)
            elif code in DECIMAL_COLUMNS:
                ws.write_number(r, c, value, dec)
            else:
                ws.write_number(r, c, value)
    ws.freeze_panes(1, 0)
    ws.autofilter(0, 0, max(1, len(result.rows)), len(names) - 1)
    info = wb.add_worksheet("口径" if lang == "zh" else "Method")
    info.set_column(0, 0, 24)
    info.set_column(1, 1, 70)
    facts = [
        ("period_from", result.period_from),
        ("period_to", result.period_to),
        ("timezone", result.timezone),
        ("level", result.level),
        ("hall", result.hall or ""),
        ("policy_name", result.policy_name),
        ("policy_hash", result.policy_hash),
        ("policy", policy.canonical_json()),
        ("exclusions", json.dumps(result.exclusions, ensure_ascii=False)),
    ]
    for r, (k, v) in enumerate(facts):
        info.write_string(r, 0, k, head)
        info.write_string(r, 1, v)
    listed = wb.add_worksheet("剔除明细" if lang == "zh" else "Excluded")
    fields = ("id", "reason", "hall", "window", "device", "day", "scale", "rating_level")
    for c, name in enumerate(fields):
        listed.write_string(0, c, name, head)
        listed.set_column(c, c, 38 if name == "id" else 12)
    for r, item in enumerate(result.excluded_ratings, 1):
        for c, value in enumerate(item.model_dump()[f] for f in fields):
            if isinstance(value, int):
                listed.write_number(r, c, value)
            else:
                listed.write_string(r, c, str(value))
    listed.freeze_panes(1, 0)
    wb.close()
    return buf.getvalue()


def data_bytes(result: ScoreResult, policy: Policy, fmt: str, lang: str = "zh") -> bytes:
    """Return the data file of `result` in `fmt`."""
    if fmt == "csv":
        return csv_bytes(result, lang)
    if fmt == "xlsx":
        return xlsx_bytes(result, policy, lang)
    if fmt == "json":
        return json_bytes(result)
    raise ValueError(f"format must be one of {', '.join(FORMATS)}")


def manifest_path(out: Path) -> Path:
    """Return where the manifest of data file `out` goes."""
    return out.with_name(out.name + ".manifest.json")


def _atomic_write(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_export(
    result: ScoreResult,
    policy: Policy,
    fmt: str,
    out: Path,
    lang: str = "zh",
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> dict[str, Any]:
    """Write the data file and its manifest; return the manifest."""
    data = data_bytes(result, policy, fmt, lang)
    out.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(out, data)
    manifest = {
        "file": out.name,
        "format": fmt,
        "level": result.level,
        "period": {
            "from": result.period_from,
            "to": result.period_to,
            "to_inclusive": True,
            "timezone": result.timezone,
        },
        "hall": result.hall,
        "policy": {
            "name": result.policy_name,
            "hash": result.policy_hash,
            "rules": policy.model_dump(mode="json"),
        },
        "generated": now().isoformat(timespec="seconds"),
        "rows": len(result.rows),
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "sources": {"rollup_days": result.rollup_days, "raw_days": result.raw_days},
        "cases_available": result.cases_available,
        "exclusions": result.exclusions,
        "excluded_ratings": [e.model_dump() for e in result.excluded_ratings],
    }
    text = json.dumps(manifest, ensure_ascii=False, indent=1) + "\n"
    _atomic_write(manifest_path(out), text.encode())
    return manifest

"""One check's result, the whole report, and how both are shown (table or JSON)."""

import json
from dataclasses import dataclass, field
from typing import Any, Literal

Status = Literal["ok", "warn", "fail", "unknown"]
Lang = Literal["zh", "en", "both"]
# "unknown": this machine cannot measure it (the value says why); not counted as a problem.
PROBLEMS: tuple[Status, ...] = ("warn", "fail")
PARTS: dict[str, tuple[str, str]] = {
    "services": ("服务与端口", "services and ports"),
    "certs": ("TLS 证书", "TLS certificates"),
    "disk": ("磁盘", "disk"),
    "clock": ("时钟", "clocks"),
    "pipeline": ("评价链路", "rating pipeline"),
    "devices": ("评价器", "devices"),
    "upkeep": ("维护", "upkeep"),
}


@dataclass(frozen=True)
class Fix:
    """One line saying what to do, in Chinese and English."""

    zh: str
    en: str

    def text(self, lang: Lang) -> str:
        """The line in `lang` (both: Chinese, then English)."""
        if lang == "zh":
            return self.zh
        if lang == "en":
            return self.en
        return f"{self.zh} / {self.en}"


@dataclass(frozen=True)
class Check:
    """One check: where it belongs, what it measured and, for a problem, what to do."""

    part: str
    name: str
    status: Status
    value: str
    fix: Fix | None = None
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """`part.name`, unique in a report."""
        return f"{self.part}.{self.name}"

    def as_json(self) -> dict[str, Any]:
        """The JSON object of this check."""
        return {
            "id": self.id,
            "part": self.part,
            "name": self.name,
            "status": self.status,
            "value": self.value,
            "fix": None if self.fix is None else {"zh": self.fix.zh, "en": self.fix.en},
            "data": self.data,
        }


def ok(part: str, name: str, value: str, **data: Any) -> Check:
    """A check that found nothing wrong."""
    return Check(part, name, "ok", value, None, data)


def problem(
    part: str, name: str, status: Status, value: str, zh: str, en: str, **data: Any
) -> Check:
    """A check with a status other than ok and the line saying what to do."""
    return Check(part, name, status, value, Fix(zh, en), data)


@dataclass(frozen=True)
class Report:
    """Every check of one run, and the installation it looked at."""

    installation: str
    checks: list[Check]

    def counts(self) -> dict[str, int]:
        """Checks per status."""
        out = {s: 0 for s in ("ok", "warn", "fail", "unknown")}
        for c in self.checks:
            out[c.status] += 1
        return out

    def exit_code(self, strict: bool = False) -> int:
        """1 on any fail (or, with strict, any warn), else 0."""
        bad = ("fail", "warn") if strict else ("fail",)
        return 1 if any(c.status in bad for c in self.checks) else 0

    def as_json(self) -> dict[str, Any]:
        """The whole report as one JSON document."""
        counts = self.counts()
        return {
            "installation": self.installation,
            "ok": counts["warn"] == counts["fail"] == 0,
            "counts": counts,
            "checks": [c.as_json() for c in self.checks],
        }

    def json_text(self) -> str:
        """The JSON document as text (UTF-8, not escaped)."""
        return json.dumps(self.as_json(), ensure_ascii=False, indent=2)

    def table(self, lang: Lang = "both") -> str:
        """A compact table grouped by part, each problem followed by its fix."""
        lines = [f"installation: {self.installation}"]
        width = max((len(c.name) for c in self.checks), default=8)
        for part, (zh, en) in PARTS.items():
            rows = [c for c in self.checks if c.part == part]
            if not rows:
                continue
            title = zh if lang == "zh" else en if lang == "en" else f"{zh} · {en}"
            lines.append(f"\n{title}")
            for c in rows:
                mark = {"ok": "ok", "warn": "WARN", "fail": "FAIL", "unknown": "?"}[c.status]
                lines.append(f"  {mark:<5} {c.name:<{width}}  {c.value}")
                if c.fix is not None:
                    lines.append(f"  {'':<5} {'':<{width}}  → {c.fix.text(lang)}")
        n = self.counts()
        summary = {
            "zh": f"正常 {n['ok']}，警告 {n['warn']}，故障 {n['fail']}，未知 {n['unknown']}",
            "en": f"{n['ok']} ok, {n['warn']} warn, {n['fail']} fail, {n['unknown']} unknown",
        }
        both = f"{summary['zh']} / {summary['en']}"
        lines.append("\n" + (summary[lang] if lang in ("zh", "en") else both))
        return "\n".join(lines)

"""The scoring policy (TOML), validated, with defaults and a canonical hash.

It is the one definition of a negative and a satisfied rating: the live boards, the
cases (which ratings open one) and the scores and exports all ask it.
"""

import hashlib
import json
import tomllib
from pathlib import Path
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from protocol.scales import SCALES, level_index
from server.scores.settings import get_settings

ScaleKey = str  # "3", "4" or "5"
SCALE_KEYS = ("3", "4", "5")
Level = Annotated[int, Field(ge=1, le=5)]


def _default_index() -> dict[ScaleKey, list[float]]:
    """Index of a rating = (level − 1) / (scale − 1) × 100, per scale."""
    return {str(s): [level_index(s, lv) for lv in range(1, s + 1)] for s in SCALES}


class _Section(BaseModel):
    """Base of every policy section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ScaleRules(_Section):
    """How the levels of each scale count: index, satisfied and negative levels."""

    index: dict[ScaleKey, list[float]] = Field(
        default_factory=_default_index, title="0–100 index of level 1 … scale, per scale"
    )
    satisfied: dict[ScaleKey, list[Level]] = Field(
        default_factory=lambda: {"5": [3, 4, 5], "4": [2, 3, 4], "3": [2, 3]},
        title="Levels that count as satisfied (基本满意 or better), per scale",
    )
    negative: dict[ScaleKey, list[Level]] = Field(
        default_factory=lambda: {"5": [1, 2], "4": [1], "3": [1]},
        title="Negative levels, per scale",
    )

    @model_validator(mode="after")
    def _complete(self) -> Self:
        """Every scale needs one index per level (0–100) and levels within the scale."""
        for name in ("index", "satisfied", "negative"):
            unknown = set(getattr(self, name)) - set(SCALE_KEYS)
            if unknown:
                raise ValueError(f"{name}: unknown scales {sorted(unknown)}")
        for key in SCALE_KEYS:
            scale = int(key)
            idx = self.index.get(key)
            if idx is None or len(idx) != scale or not all(0 <= v <= 100 for v in idx):
                raise ValueError(f"index of scale {key} needs {scale} values in 0–100")
            for name in ("satisfied", "negative"):
                levels = getattr(self, name).get(key, [])
                if any(lv > scale for lv in levels):
                    raise ValueError(f"{name} levels of scale {key} beyond the scale")
        return self


class Exclusions(_Section):
    """Which ratings do not count (each exclusion is listed with its reason)."""

    repeats: bool = Field(default=True, title="Repeats flagged by the device (x-repeat)")
    test_devices: bool = Field(default=True, title="Ratings from test devices (registry)")
    paused: bool = Field(default=True, title="Ratings while the window was paused")
    fraud: bool = Field(default=True, title="Ratings reviewed as fraud")
    appeals: bool = Field(default=True, title="Ratings excluded by an approved appeal")


class Points(_Section):
    """Assessment points = score / 100 × allocated points."""

    default: float = Field(default=100.0, ge=0, title="Points allocated to every entity")
    overrides: dict[str, float] = Field(
        default_factory=dict,
        title='Points per entity key ("a12") or hall and key ("hz-civic/a12"), overriding default',
    )


class Rounding(_Section):
    """Decimal places of the reported numbers (half up)."""

    score: int = Field(default=2, ge=0, le=6, title="Score decimals")
    rate: int = Field(default=4, ge=0, le=8, title="Satisfaction/handling rate decimals")
    points: int = Field(default=2, ge=0, le=6, title="Assessment points decimals")


class Fraud(_Section):
    """Thresholds of the fraud detectors (flags are reviewed by a person)."""

    min_service_s: float = Field(
        default=30.0, ge=0, title="Ratings on one device closer than this are too fast"
    )
    top_run: int = Field(
        default=10, ge=2, title="Run length of identical top ratings without a prompt"
    )
    while_paused: bool = Field(default=True, title="Flag ratings made while paused")
    same_ticket: bool = Field(default=True, title="Flag several ratings on one ticket")


class Policy(_Section):
    """The scoring policy; its canonical hash is reported with every result."""

    name: str = Field(default="default", max_length=100, title="Policy name")
    min_sample: int = Field(default=30, ge=1, title="Fewer counted ratings: insufficient sample")
    scales: ScaleRules = Field(default_factory=ScaleRules, title="Scale mapping")
    exclusions: Exclusions = Field(default_factory=Exclusions, title="Exclusions")
    points: Points = Field(default_factory=Points, title="Allocated points")
    rounding: Rounding = Field(default_factory=Rounding, title="Rounding")
    fraud: Fraud = Field(default_factory=Fraud, title="Fraud detection")

    def index(self, scale: int, level: int) -> float:
        """Return the 0–100 index of `level` on `scale`."""
        return self.scales.index[str(scale)][level - 1]

    def satisfied(self, scale: int, level: int) -> bool:
        """Return True if `level` on `scale` counts as satisfied."""
        return level in self.scales.satisfied.get(str(scale), [])

    def negative(self, scale: int, level: int) -> bool:
        """Return True if `level` on `scale` is negative."""
        return level in self.scales.negative.get(str(scale), [])

    def negative_levels(self) -> dict[int, list[int]]:
        """Return the negative levels of each scale."""
        return {int(k): sorted(v) for k, v in self.scales.negative.items()}

    def canonical_json(self) -> str:
        """Return the policy as canonical JSON (sorted keys, no spaces, floats as written)."""
        return json.dumps(
            self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )

    @property
    def hash(self) -> str:
        """Return the sha256 of the canonical JSON of the validated policy."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()


class PolicyError(ValueError):
    """The policy file cannot be read or is invalid."""


def load_policy(path: Path | None) -> Policy:
    """Return the policy in TOML file `path`, or the defaults when None."""
    if path is None:
        return Policy()
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        return Policy.model_validate(data)
    except (OSError, tomllib.TOMLDecodeError, ValueError) as exc:
        raise PolicyError(f"policy {path}: {exc}") from exc


def active_policy() -> Policy:
    """Return the policy in force: the file of WR_SCORES_POLICY_FILE, or the defaults."""
    return load_policy(get_settings().policy_file)

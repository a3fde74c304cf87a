"""Rating scales (3, 4 or 5 keys), their zh/en labels, index, and when a device asks reasons."""

from typing import Literal

Scale = Literal[3, 4, 5]
SCALES: tuple[int, ...] = (3, 4, 5)

# Labels per scale, index 0 = level 1 (worst), as in the wire contract v1.
_LABELS_ZH: dict[int, tuple[str, ...]] = {
    5: ("非常不满意", "不满意", "基本满意", "满意", "非常满意"),
    4: ("不满意", "基本满意", "满意", "非常满意"),
    3: ("不满意", "基本满意", "满意"),
}
_LABELS_EN: dict[int, tuple[str, ...]] = {
    5: ("Very dissatisfied", "Dissatisfied", "Fairly satisfied", "Satisfied", "Very satisfied"),
    4: ("Dissatisfied", "Fairly satisfied", "Satisfied", "Very satisfied"),
    3: ("Dissatisfied", "Fairly satisfied", "Satisfied"),
}


def check_level(scale: int, level: int) -> None:
    """Raise ValueError unless `level` is a valid level of `scale`."""
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale}")
    if not 1 <= level <= scale:
        raise ValueError(f"level must be between 1 and {scale}, got {level}")


def level_label(scale: int, level: int, lang: str = "zh") -> str:
    """Return the label of `level` on `scale` in `lang` ("zh" or "en")."""
    check_level(scale, level)
    table = _LABELS_EN if lang == "en" else _LABELS_ZH
    return table[scale][level - 1]


def level_index(scale: int, level: int) -> float:
    """Return the 0–100 index of a rating: (level − 1) / (scale − 1) × 100."""
    check_level(scale, level)
    return (level - 1) / (scale - 1) * 100.0


def offers_reasons(scale: int, level: int) -> bool:
    """Device rule: offer follow-up reasons after the two lowest of five levels, else the lowest.

    Only the kiosk uses this. Which ratings count as negative or satisfied (board, cases,
    scores) is the server's scoring policy, `server.scores.policy`.
    """
    check_level(scale, level)
    return level <= 2 if scale == 5 else level == 1

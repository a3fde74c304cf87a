"""Colours, face shapes, target sizes and the CJK font of the kiosk screens."""

import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

RGBA = tuple[float, float, float, float]

# Debian's CJK fonts, first found wins (fonts-wqy-microhei is the one the Pi image installs).
FONT_CANDIDATES = (
    Path("/usr/share/fonts/truetype/wqy/wqy-microhei.ttc"),
    Path("/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc"),
    Path("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"),
    Path("/usr/share/fonts/truetype/arphic/uming.ttc"),
)
FONT_NAME = "WindowRateCJK"
MIN_TARGET_MM = 20.0  # smallest side of a rating or reason button


def hex_rgba(code: str, alpha: float = 1.0) -> RGBA:
    """Convert "#RRGGBB" to Kivy's 0–1 RGBA."""
    code = code.lstrip("#")
    r, g, b = (int(code[i : i + 2], 16) / 255 for i in (0, 2, 4))
    return (r, g, b, alpha)


# Okabe & Ito (2008), the colour-blind-safe palette. Colour is never the only cue: every
# rating button also has its label and a face whose mouth and brows carry the level.
OKABE_ITO = {
    "orange": hex_rgba("#E69F00"),
    "sky_blue": hex_rgba("#56B4E9"),
    "bluish_green": hex_rgba("#009E73"),
    "yellow": hex_rgba("#F0E442"),
    "blue": hex_rgba("#0072B2"),
    "vermillion": hex_rgba("#D55E00"),
    "reddish_purple": hex_rgba("#CC79A7"),
    "black": hex_rgba("#000000"),
}
# Colours by scale, index 0 = level 1 (worst).
_LEVEL_COLOURS: dict[int, tuple[str, ...]] = {
    5: ("vermillion", "orange", "yellow", "sky_blue", "bluish_green"),
    4: ("vermillion", "yellow", "sky_blue", "bluish_green"),
    3: ("vermillion", "yellow", "bluish_green"),
}

BACKGROUND = hex_rgba("#F5F5F0")
INK = hex_rgba("#1A1A1A")
MUTED = hex_rgba("#5A5A5A")
WHITE = hex_rgba("#FFFFFF")
HEADER = OKABE_ITO["blue"]
PAUSED_BG = hex_rgba("#E4E4E0")
TOGGLE_OFF = hex_rgba("#FFFFFF")
TOGGLE_ON = OKABE_ITO["sky_blue"]
CONFIRM = OKABE_ITO["blue"]
OFFLINE_BG = hex_rgba("#333333", 0.92)
IDENTIFY = OKABE_ITO["reddish_purple"]


def level_colour(scale: int, level: int) -> RGBA:
    """The button colour of `level` on `scale`."""
    names = _LEVEL_COLOURS[scale]
    return OKABE_ITO[names[level - 1]]


@dataclass(frozen=True, slots=True)
class FaceShape:
    """How a face looks: mouth curve −1 (deep frown) … 1 (broad smile), brows, open mouth."""

    mood: float
    sad_brows: bool = False
    open_mouth: bool = False


def face_shape(scale: int, level: int) -> FaceShape:
    """The face of `level` on `scale`: best is a laughing face, worst a frown with sad brows."""
    mood = 2.0 * (level - 1) / (scale - 1) - 1.0
    return FaceShape(mood=mood, sad_brows=level == 1, open_mouth=level == scale)


def find_font() -> Path | None:
    """Return the first installed CJK font, or None."""
    for path in FONT_CANDIDATES:
        if path.exists():
            return path
    return None


def register_font() -> str | None:
    """Register the CJK font with Kivy as the default font; return its name (None: not found)."""
    from kivy.core.text import DEFAULT_FONT, LabelBase

    path = find_font()
    if path is None:
        log.error("no CJK font found (apt-get install fonts-wqy-microhei); Chinese will not show")
        return None
    LabelBase.register(FONT_NAME, str(path))
    # Every Label, including Kivy's own, then renders Chinese.
    LabelBase.register(DEFAULT_FONT, str(path))
    log.info("font %s registered from %s", FONT_NAME, path)
    return FONT_NAME

"""Checks of the codes the provincial 好差评 platforms need: USCC, 行政区划 code, 事项编码.

What is checked, and what cannot be:
- 统一社会信用代码 (GB 32100-2015): 18 characters from 0-9 A-H J-N P-R T-U W-Y, the 18th
  a check character over the first 17. The registration authority's region (positions
  3-8) and the organisation code (positions 9-17, GB 11714) are not checked on their own:
  central bodies use region 100000, and the check character already catches typing errors.
- 行政区划代码 (GB/T 2260, 6 digits; the statistical division code adds 3 digits for the
  township and 3 for the village): digits only, 6, 9 or 12 of them, a real province, and
  no lower level under an all-zero higher one (no county under prefecture 00, no village
  under township 000). A township directly under a prefecture-level city without counties
  (东莞 441900003, 中山, 儋州, 嘉峪关) is valid. Whether the code exists today is not
  checked: codes change every year and no list ships with the server.
- 事项编码 (政务服务事项基本目录 / 实施清单, GB/T 39554.1): it has no national check digit,
  and its layout differs by province and by kind (a 基本编码 of digits, a 实施编码 that
  begins with the unit's USCC, letters such as XK in some provinces). Only its shape is
  checked: upper-case letters, digits and single hyphens, 4 to 64 characters.

Every error names the value, what is wrong and what to do, in Chinese first, then English.
"""

import re

USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"
USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
# Provinces of GB/T 2260: the first two digits of every 行政区划 code.
PROVINCES = frozenset(
    {
        "11", "12", "13", "14", "15", "21", "22", "23", "31", "32", "33", "34", "35", "36",
        "37", "41", "42", "43", "44", "45", "46", "50", "51", "52", "53", "54", "61", "62",
        "63", "64", "65", "71", "81", "82",
    }
)  # fmt: skip
AREA_LENGTHS = (6, 9, 12)
ITEM_MIN, ITEM_MAX = 4, 64
_ITEM_SHAPE = re.compile(r"[A-Z0-9]+(-[A-Z0-9]+)*")


class CodeError(ValueError):
    """A code that is not valid; the message says why and what to do (zh / en)."""


def uscc_check_char(first17: str) -> str:
    """Return the GB 32100-2015 check character of the first 17 characters of a USCC."""
    total = sum(USCC_CHARS.index(c) * w for c, w in zip(first17, USCC_WEIGHTS, strict=True))
    return USCC_CHARS[(31 - total % 31) % 31]


def check_uscc(value: str) -> str:
    """Return `value` if it is a valid 统一社会信用代码, else raise CodeError."""
    v = repr(value)
    if len(value) != 18:
        raise CodeError(
            f"统一社会信用代码 {v} 应为 18 位，实为 {len(value)} 位：请按营业执照或登记证书填写"
            f" / USCC {v} must have 18 characters, not {len(value)}: copy it from the licence"
        )
    lower = next((c for c in value if c.islower()), None)
    if lower is not None:
        raise CodeError(
            f"统一社会信用代码 {v} 含小写字母 {lower!r}：请改为大写"
            f" / USCC {v} has the lower-case letter {lower!r}: write it in upper case"
        )
    unused = next((c for c in value if c in "IOZSV"), None)
    if unused is not None:
        raise CodeError(
            f"统一社会信用代码 {v} 含字母 {unused!r}，GB 32100 不用 I、O、Z、S、V："
            "请核对是否应为数字"
            f" / USCC {v} has {unused!r}, which GB 32100 never uses (no I, O, Z, S, V):"
            " check whether it is a digit"
        )
    bad = next((c for c in value if c not in USCC_CHARS), None)
    if bad is not None:
        raise CodeError(
            f"统一社会信用代码 {v} 含非法字符 {bad!r}：只能是数字和大写字母"
            f" / USCC {v} has the character {bad!r}: only digits and upper-case letters"
        )
    expected = uscc_check_char(value[:17])
    if value[17] != expected:
        raise CodeError(
            f"统一社会信用代码 {v} 校验位应为 {expected!r}，实为 {value[17]!r}：请逐位核对"
            f" / USCC {v}: the check character should be {expected!r}, not {value[17]!r};"
            " a character is mistyped, compare it with the licence"
        )
    return value


def check_area_code(value: str) -> str:
    """Return `value` if it is a well-formed 行政区划代码 (6, 9 or 12 digits), else CodeError."""
    v = repr(value)
    if not (value.isascii() and value.isdigit()):
        raise CodeError(
            f"行政区划代码 {v} 只能是数字 / area code {v} must be digits only (GB/T 2260)"
        )
    if len(value) not in AREA_LENGTHS:
        raise CodeError(
            f"行政区划代码 {v} 应为 6、9 或 12 位数字，实为 {len(value)} 位"
            f" / area code {v} must have 6, 9 or 12 digits, not {len(value)}"
        )
    if value[:2] not in PROVINCES:
        raise CodeError(
            f"行政区划代码 {v} 的省级代码 {value[:2]} 不存在（GB/T 2260 为 11–82）：请核对前两位"
            f" / area code {v}: {value[:2]} is no province of GB/T 2260 (11–82);"
            " check the first two digits"
        )
    prefecture, county, lower = value[2:4], value[4:6], value[6:]
    if prefecture == "00" and (county != "00" or lower.strip("0")):
        raise CodeError(
            f"行政区划代码 {v} 的地市级为 00，其后各级也应为 0"
            f" / area code {v}: prefecture 00, so every lower level must be 0 too"
        )
    if len(value) == 12 and value[6:9] == "000" and value[9:] != "000":
        raise CodeError(
            f"行政区划代码 {v} 的乡镇级为 000，村级也应为 000"
            f" / area code {v}: township 000, so the village must be 000 too"
        )
    return value


def check_item_code(value: str) -> str:
    """Return `value` if it has the shape of a 事项编码, else raise CodeError."""
    v = repr(value)
    if not ITEM_MIN <= len(value) <= ITEM_MAX:
        raise CodeError(
            f"事项编码 {v} 应为 {ITEM_MIN}–{ITEM_MAX} 位，实为 {len(value)} 位"
            f" / item code {v} must have {ITEM_MIN} to {ITEM_MAX} characters, not {len(value)}"
        )
    if any(c.islower() for c in value):
        raise CodeError(
            f"事项编码 {v} 含小写字母：请改为大写"
            f" / item code {v} has lower-case letters: write them in upper case"
        )
    if not _ITEM_SHAPE.fullmatch(value):
        raise CodeError(
            f"事项编码 {v} 只能含大写字母、数字和单个连字符，且不以连字符开头或结尾："
            "请按政务服务事项目录填写"
            f" / item code {v} may hold only upper-case letters, digits and single hyphens,"
            " not at either end: copy it from the service item catalogue"
        )
    return value

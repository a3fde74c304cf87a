"""User-facing strings of the export page in Chinese (default) and English."""

from server.i18n import Lang

STRINGS: dict[str, dict[Lang, str]] = {
    "title": {"zh": "评价得分导出 · 目标考核", "en": "Score export · target assessment"},
    "from": {"zh": "开始日期", "en": "From"},
    "to": {"zh": "结束日期（含）", "en": "To (inclusive)"},
    "level": {"zh": "统计层级", "en": "Level"},
    "format": {"zh": "文件格式", "en": "Format"},
    "hall": {"zh": "大厅（留空为全部）", "en": "Hall (empty: all)"},
    "start": {"zh": "开始导出", "en": "Export"},
    "window": {"zh": "窗口", "en": "Window"},
    "unit": {"zh": "部门", "en": "Unit"},
    "hall_level": {"zh": "大厅", "en": "Hall"},
    "staff": {"zh": "工作人员", "en": "Staff"},
    "item": {"zh": "服务事项", "en": "Service item"},
    "progress": {"zh": "进度", "en": "Progress"},
    "days": {"zh": "天", "en": "days"},
    "done": {"zh": "完成", "en": "Done"},
    "failed": {"zh": "失败", "en": "Failed"},
    "download": {"zh": "下载数据文件", "en": "Download the data file"},
    "manifest": {"zh": "下载清单（口径、哈希、校验和）", "en": "Download the manifest"},
    "login": {"zh": "请先登录。", "en": "Please log in first."},
    "rows": {"zh": "行", "en": "rows"},
}


def st(key: str, lang: Lang) -> str:
    """Return the string `key` in `lang`."""
    return STRINGS[key][lang]

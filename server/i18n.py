"""User-facing strings of the server in Chinese (default) and English."""

from typing import Literal

Lang = Literal["zh", "en"]
LANGS: tuple[Lang, ...] = ("zh", "en")
DEFAULT_LANG: Lang = "zh"

STRINGS: dict[str, dict[Lang, str]] = {
    "title": {"zh": "窗口服务评价 · 今日看板", "en": "Window ratings · Today"},
    "date": {"zh": "日期", "en": "Date"},
    "updated": {"zh": "更新于", "en": "Updated at"},
    "auto_refresh": {"zh": "每 5 秒自动刷新", "en": "Refreshes every 5 s"},
    "all_halls": {"zh": "全部大厅", "en": "All halls"},
    "hall": {"zh": "大厅", "en": "Hall"},
    "window": {"zh": "窗口", "en": "Window"},
    "ratings": {"zh": "今日评价数", "en": "Ratings today"},
    "satisfaction_rate": {"zh": "满意率", "en": "Satisfaction"},
    "score": {"zh": "得分", "en": "Score"},
    "negatives": {"zh": "差评", "en": "Negative"},
    "total": {"zh": "合计", "en": "Total"},
    "empty": {"zh": "今天还没有评价", "en": "No ratings yet today"},
    "influx_down_title": {"zh": "无法读取评价数据", "en": "Ratings cannot be read"},
    "influx_down_help": {
        "zh": (
            "服务器无法访问 InfluxDB（{url}）。请确认 InfluxDB 服务已启动、"
            "服务器设置 WR_SERVER_INFLUX__URL 指向它，并查看 /health。"
            "本页每 5 秒自动重试。"
        ),
        "en": (
            "The server cannot reach InfluxDB ({url}). Make sure the InfluxDB service is "
            "running and the server setting WR_SERVER_INFLUX__URL points to it, then check "
            "/health. This page retries every 5 s."
        ),
    },
    "error_detail": {"zh": "错误信息", "en": "Error"},
    "health": {"zh": "系统状态", "en": "System health"},
}


def normalize_lang(value: str | None) -> Lang:
    """Return a supported language for a `?lang=` value (Chinese when unknown)."""
    if value and value.lower().startswith("en"):
        return "en"
    return DEFAULT_LANG


def t(key: str, lang: Lang, **fmt: object) -> str:
    """Return the string `key` in `lang`, formatted with `fmt` if given."""
    text = STRINGS[key][lang]
    return text.format(**fmt) if fmt else text


# Live boards, the window page, the big screen and device states (server/live).
STRINGS.update(
    {
        "state": {"zh": "状态", "en": "State"},
        "staff_on_duty": {"zh": "在岗人员", "en": "Clerk on duty"},
        "last_negative": {"zh": "最近差评", "en": "Last negative"},
        "state_online": {"zh": "在线", "en": "Online"},
        "state_paused": {"zh": "暂停", "en": "Paused"},
        "state_offline": {"zh": "离线", "en": "Offline"},
        "state_unknown": {"zh": "未知", "en": "Unknown"},
        "live_connected": {"zh": "实时更新", "en": "Live"},
        "live_reconnecting": {"zh": "正在重新连接…", "en": "Reconnecting…"},
        "weekdays": {
            "zh": "周一,周二,周三,周四,周五,周六,周日",
            "en": "Mon,Tue,Wed,Thu,Fri,Sat,Sun",
        },
        "hour": {"zh": "时", "en": "Hour"},
        "timeline": {"zh": "今日评价时间线", "en": "Today's ratings"},
        "heatmap": {"zh": "时段分布（近 28 天）", "en": "Hour × weekday (last 28 days)"},
        "trend": {"zh": "每日趋势（近 30 天）", "en": "Daily trend (last 30 days)"},
        "window_title": {"zh": "窗口评价详情", "en": "Window ratings"},
        "screen_title": {"zh": "窗口服务评价公示", "en": "Window service ratings"},
        "stars": {"zh": "星级", "en": "Stars"},
        "big_screen": {"zh": "公示大屏", "en": "Big screen"},
        "hall_board": {"zh": "大厅看板", "en": "Hall board"},
        "live_help": {
            "zh": "评价实时推送；数据每 30 秒与 InfluxDB 核对",
            "en": "Ratings arrive live; numbers are checked against InfluxDB every 30 s",
        },
    }
)

STRINGS.update(
    {
        "case_alert": {"zh": "待处理差评工单 {n} 件", "en": "{n} negative-rating cases to handle"},
        "case_alert_overdue": {"zh": "其中逾期 {n} 件", "en": "{n} overdue"},
        "case_alert_newest": {
            "zh": "最新：{window} 号窗口 {time}",
            "en": "newest: window {window} at {time}",
        },
    }
)

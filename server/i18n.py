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

# Admin pages: registry, devices and provisioning, users (server/admin); adm_* also go to the JS.
STRINGS.update(
    {
        "adm_admin": {"zh": "管理", "en": "Admin"},
        "adm_title_registry": {"zh": "基础数据", "en": "Registry"},
        "adm_title_devices": {"zh": "设备管理", "en": "Devices"},
        "adm_title_users": {"zh": "用户管理", "en": "Users"},
        "adm_nav": {"zh": "导航", "en": "Navigation"},
        "adm_nav_board": {"zh": "看板", "en": "Board"},
        "adm_nav_cases": {"zh": "差评工单", "en": "Cases"},
        "adm_nav_exports": {"zh": "导出", "en": "Exports"},
        "adm_user": {"zh": "当前用户", "en": "User"},
        "adm_login": {"zh": "请登录", "en": "Please log in"},
        "adm_username": {"zh": "用户名", "en": "Username"},
        "adm_password": {"zh": "密码", "en": "Password"},
        "adm_login_button": {"zh": "登录", "en": "Log in"},
        "adm_login_failed": {"zh": "登录失败", "en": "Login failed"},
        "adm_admins_only": {
            "zh": "仅管理员可使用本页。",
            "en": "Only administrators may use this page.",
        },
        "adm_entities": {"zh": "数据类别", "en": "Record kinds"},
        "adm_ent_halls": {"zh": "大厅", "en": "Halls"},
        "adm_ent_units": {"zh": "部门", "en": "Units"},
        "adm_ent_windows": {"zh": "窗口", "en": "Windows"},
        "adm_ent_devices": {"zh": "设备", "en": "Devices"},
        "adm_ent_staff": {"zh": "工作人员", "en": "Staff"},
        "adm_ent_items": {"zh": "事项", "en": "Service items"},
        "adm_f_code": {"zh": "编码", "en": "Code"},
        "adm_f_name": {"zh": "名称", "en": "Name"},
        "adm_f_hall": {"zh": "大厅", "en": "Hall"},
        "adm_f_unit": {"zh": "部门", "en": "Unit"},
        "adm_f_window": {"zh": "窗口", "en": "Window"},
        "adm_f_number": {"zh": "工号", "en": "Staff number"},
        "adm_f_test_device": {"zh": "测试设备", "en": "Test device"},
        "adm_f_created": {"zh": "创建时间", "en": "Created"},
        "adm_f_device": {"zh": "设备编号", "en": "Device"},
        "adm_f_uscc": {"zh": "统一社会信用代码", "en": "USCC (credit code)"},
        "adm_f_area_code": {"zh": "行政区划代码", "en": "Area code"},
        "adm_f_catalog_code": {"zh": "目录事项编码", "en": "Catalogue item code"},
        "adm_no_records": {"zh": "暂无记录", "en": "No records"},
        "adm_add": {"zh": "新增", "en": "Add"},
        "adm_edit": {"zh": "编辑", "en": "Edit"},
        "adm_edit_record": {"zh": "编辑记录", "en": "Edit record"},
        "adm_delete": {"zh": "删除", "en": "Delete"},
        "adm_confirm_delete": {"zh": "确认删除？", "en": "Really delete?"},
        "adm_deleted": {"zh": "已删除", "en": "Deleted"},
        "adm_save": {"zh": "保存", "en": "Save"},
        "adm_saved": {"zh": "已保存", "en": "Saved"},
        "adm_added": {"zh": "已新增", "en": "Added"},
        "adm_cancel": {"zh": "取消", "en": "Cancel"},
        "adm_yes": {"zh": "是", "en": "yes"},
        "adm_no": {"zh": "否", "en": "no"},
        "adm_error": {"zh": "错误", "en": "Error"},
        "adm_failed": {"zh": "操作失败", "en": "failed"},
        "adm_import": {"zh": "批量导入", "en": "Import"},
        "adm_import_help": {
            "zh": "选择 CSV（UTF-8）或 XLSX 文件（第一个工作表，首行为表头，最大 5 MB），"
            "先预览检查每一行，全部无误后再导入；导入时全部写入或全部不写。",
            "en": "Choose a CSV (UTF-8) or XLSX file (first sheet, header in row 1, at most "
            "5 MB), preview to check every row, then import: all rows are written or none.",
        },
        "adm_preview": {"zh": "预览", "en": "Preview"},
        "adm_do_import": {"zh": "导入", "en": "Import"},
        "adm_row": {"zh": "行号", "en": "Row"},
        "adm_ok": {"zh": "通过", "en": "OK"},
        "adm_values": {"zh": "内容", "en": "Values"},
        "adm_errors": {"zh": "错误", "en": "Errors"},
        "adm_preview_of": {"zh": "预览：", "en": "Preview:"},
        "adm_rows": {"zh": "行", "en": "rows"},
        "adm_with_errors": {"zh": "行有错误", "en": "with errors"},
        "adm_imported": {"zh": "已导入", "en": "Imported"},
        "adm_devices": {"zh": "设备状态", "en": "Device status"},
        "adm_no_devices": {"zh": "暂无设备", "en": "No devices"},
        "adm_ticket": {"zh": "排队号", "en": "Ticket"},
        "adm_ticket_help": {
            "zh": "“邀评”时发送给设备（可不填）",
            "en": "sent with “prompt” (optional)",
        },
        "adm_state": {"zh": "状态", "en": "State"},
        "adm_state_online": {"zh": "在线", "en": "online"},
        "adm_state_paused": {"zh": "暂停", "en": "paused"},
        "adm_state_offline": {"zh": "离线", "en": "offline"},
        "adm_state_unknown": {"zh": "未知", "en": "unknown"},
        "adm_last_seen": {"zh": "最近通信", "en": "Last seen"},
        "adm_backlog": {"zh": "待发送", "en": "Backlog"},
        "adm_version": {"zh": "版本", "en": "Version"},
        "adm_clock": {"zh": "时钟同步", "en": "Clock synced"},
        "adm_commands": {"zh": "操作", "en": "Commands"},
        "adm_cmd_pause": {"zh": "暂停", "en": "Pause"},
        "adm_cmd_resume": {"zh": "恢复", "en": "Resume"},
        "adm_cmd_identify": {"zh": "识别", "en": "Identify"},
        "adm_cmd_prompt": {"zh": "邀评", "en": "Prompt"},
        "adm_sent": {"zh": "已发送", "en": "Sent"},
        "adm_provision": {"zh": "设备开通", "en": "Provisioning"},
        "adm_register": {"zh": "登记并生成开通码", "en": "Register and issue a code"},
        "adm_registered": {"zh": "已登记", "en": "Registered"},
        "adm_code": {"zh": "一次性开通码", "en": "One-time code"},
        "adm_expires": {"zh": "有效期至", "en": "Expires"},
        "adm_url": {"zh": "服务器地址", "en": "Server address"},
        "adm_fingerprint": {"zh": "CA 指纹", "en": "CA fingerprint"},
        "adm_no_ca": {"zh": "（未配置 CA）", "en": "(no CA configured)"},
        "adm_code_once": {
            "zh": "开通码只显示一次：请在设备上扫码或输入。",
            "en": "The code is shown only once: scan or type it on the device.",
        },
        "adm_accounts": {"zh": "设备账号", "en": "Device accounts"},
        "adm_revoked": {"zh": "已吊销", "en": "Revoked"},
        "adm_updated": {"zh": "更新时间", "en": "Updated"},
        "adm_new_code": {"zh": "新开通码", "en": "New code"},
        "adm_revoke": {"zh": "吊销", "en": "Revoke"},
        "adm_revoked_msg": {"zh": "已吊销", "en": "Revoked"},
        "adm_role": {"zh": "角色", "en": "Role"},
        "adm_role_admin": {"zh": "管理员", "en": "Administrator"},
        "adm_role_office": {"zh": "督查办", "en": "Office"},
        "adm_role_hall_manager": {"zh": "大厅负责人", "en": "Hall manager"},
        "adm_role_viewer": {"zh": "只读用户", "en": "Viewer"},
        "adm_active": {"zh": "启用", "en": "Active"},
        "adm_created": {"zh": "创建时间", "en": "Created"},
        "adm_new_user": {"zh": "新建用户", "en": "New user"},
        "adm_create": {"zh": "创建", "en": "Create"},
        "adm_created_user": {"zh": "已创建用户", "en": "Created user"},
        "adm_deactivate": {"zh": "停用", "en": "Deactivate"},
        "adm_activate": {"zh": "启用", "en": "Activate"},
        "adm_new_password": {"zh": "新密码", "en": "New password"},
        "adm_reset_password": {"zh": "重置密码", "en": "Reset password"},
        "adm_password_set": {"zh": "已重置密码：", "en": "Password set for"},
    }
)

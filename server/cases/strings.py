"""User-facing strings of the case pages in Chinese (default) and English."""

from server.i18n import STRINGS, Lang

CASE_STRINGS: dict[str, dict[Lang, str]] = {
    "cases_title": {"zh": "差评工单", "en": "Negative-rating cases"},
    "case_title": {"zh": "差评工单 #{id}", "en": "Case #{id}"},
    "case_no": {"zh": "编号", "en": "No."},
    "case_state": {"zh": "状态", "en": "State"},
    "case_due": {"zh": "办结期限", "en": "Due"},
    "case_overdue": {"zh": "已超期", "en": "Overdue"},
    "case_rating_time": {"zh": "评价时间", "en": "Rated at"},
    "case_level": {"zh": "评价", "en": "Rating"},
    "case_staff": {"zh": "工号", "en": "Staff"},
    "case_ticket": {"zh": "取号", "en": "Ticket"},
    "case_item": {"zh": "事项", "en": "Service item"},
    "case_reasons": {"zh": "原因", "en": "Reasons"},
    "case_appeal": {"zh": "申诉", "en": "Appeal"},
    "case_history": {"zh": "处理记录", "en": "History"},
    "case_notes": {"zh": "备注", "en": "Notes"},
    "case_note": {"zh": "处理说明", "en": "Note"},
    "case_none": {"zh": "没有符合条件的工单", "en": "No cases match"},
    "case_all": {"zh": "全部", "en": "All"},
    "case_filter": {"zh": "筛选", "en": "Filter"},
    "case_back": {"zh": "返回列表", "en": "Back to the list"},
    "case_at": {"zh": "时间", "en": "When"},
    "case_actor": {"zh": "操作人", "en": "By"},
    "case_action": {"zh": "操作", "en": "Action"},
    "case_system": {"zh": "系统", "en": "System"},
    "case_login": {"zh": "请先登录", "en": "Please log in"},
    "case_username": {"zh": "用户名", "en": "Username"},
    "case_password": {"zh": "密码", "en": "Password"},
    "case_login_button": {"zh": "登录", "en": "Log in"},
    "case_login_failed": {"zh": "登录失败", "en": "Login failed"},
    "case_user": {"zh": "当前用户", "en": "Logged in as"},
    "case_appeal_reason": {"zh": "申诉理由", "en": "Reason"},
    "case_approve": {"zh": "批准申诉", "en": "Approve appeal"},
    "case_reject": {"zh": "驳回申诉", "en": "Reject appeal"},
    "case_add_note": {"zh": "添加备注", "en": "Add note"},
    "state_open": {"zh": "待处理", "en": "Open"},
    "state_contacted": {"zh": "已回访", "en": "Contacted"},
    "state_rectified": {"zh": "已整改", "en": "Rectified"},
    "state_closed": {"zh": "已办结", "en": "Closed"},
    "do_contacted": {"zh": "登记回访", "en": "Record contact"},
    "do_rectified": {"zh": "登记整改", "en": "Record rectification"},
    "do_closed": {"zh": "办结", "en": "Close"},
    "appeal_mistaken": {"zh": "误评申诉", "en": "Appeal: mistaken"},
    "appeal_malicious": {"zh": "恶意差评申诉", "en": "Appeal: malicious"},
    "appeal_pending": {"zh": "待审核", "en": "Pending"},
    "appeal_approved": {"zh": "已批准", "en": "Approved"},
    "appeal_rejected": {"zh": "已驳回", "en": "Rejected"},
    "action_opened": {"zh": "自动立案", "en": "Opened"},
    "action_contacted": {"zh": "回访", "en": "Contacted"},
    "action_rectified": {"zh": "整改", "en": "Rectified"},
    "action_closed": {"zh": "办结", "en": "Closed"},
    "action_note": {"zh": "备注", "en": "Note"},
    "action_overdue": {"zh": "超期", "en": "Overdue"},
    "action_appeal_filed": {"zh": "提交申诉", "en": "Appeal filed"},
    "action_appeal_approved": {"zh": "申诉批准", "en": "Appeal approved"},
    "action_appeal_rejected": {"zh": "申诉驳回", "en": "Appeal rejected"},
}


def ct(key: str, lang: Lang, **fmt: object) -> str:
    """Return a case string (or a general one from server.i18n) in `lang`."""
    table = CASE_STRINGS.get(key) or STRINGS.get(key)
    if table is None:
        return key
    text = table[lang]
    return text.format(**fmt) if fmt else text

"""The Audit log page's words."""

WORDS = {
    "title": {"zh": "审计日志", "en": "Audit log"},
    "actor": {"zh": "操作者", "en": "Actor"},
    "action": {"zh": "动作（或前缀，如 app.）", "en": "Action (or its prefix, e.g. app.)"},
    "action_short": {"zh": "动作", "en": "Action"},
    "target": {"zh": "对象", "en": "Target"},
    "app": {"zh": "应用", "en": "App"},
    "outcome": {"zh": "结果", "en": "Outcome"},
    "any": {"zh": "全部", "en": "any"},
    "since": {"zh": "起始（如 7d、2026-11-01）", "en": "Since (e.g. 7d, 2026-11-01)"},
    "until": {"zh": "截止", "en": "Until"},
    "filter": {"zh": "筛选", "en": "Filter"},
    "clear": {"zh": "清除", "en": "Clear"},
    "at": {"zh": "时间（UTC）", "en": "Time (UTC)"},
    "source": {"zh": "来源", "en": "Source"},
    "reason": {"zh": "原因", "en": "Reason"},
    "change": {"zh": "变更（之前 → 之后）", "en": "Change (before → after)"},
    "next": {"zh": "下一页", "en": "Next page"},
    "first": {"zh": "第一页", "en": "First page"},
    "none": {"zh": "没有符合条件的记录", "en": "No entry matches"},
}

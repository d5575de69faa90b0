"""The console frame's words: header, navigation, login, errors."""

WORDS = {
    "console": {"zh": "消息中台控制台", "en": "Switchboard console"},
    "signed_in_as": {"zh": "当前用户", "en": "Signed in as"},
    "logout": {"zh": "退出登录", "en": "Log out"},
    "language": {"zh": "语言", "en": "Language"},
    "switch_locale": {"zh": "English", "en": "中文"},
    "nav.overview": {"zh": "概览", "en": "Overview"},
    "nav.send": {"zh": "发送", "en": "Send"},
    "nav.approvals": {"zh": "审批", "en": "Approvals"},
    "nav.templates": {"zh": "模板", "en": "Templates"},
    "nav.rules": {"zh": "规则", "en": "Rules"},
    "nav.analytics": {"zh": "数据分析", "en": "Analytics"},
    "nav.apps": {"zh": "应用与渠道", "en": "Apps and channels"},
    "nav.people": {"zh": "用户", "en": "People"},
    "nav.members": {"zh": "成员与角色", "en": "Members & roles"},
    "nav.audit": {"zh": "审计日志", "en": "Audit log"},
    "nav.dead_letters": {"zh": "死信", "en": "Dead letters"},
    "login.title": {"zh": "登录", "en": "Log in"},
    "login.name": {"zh": "用户名", "en": "Name"},
    "login.password": {"zh": "密码", "en": "Password"},
    "login.submit": {"zh": "登录", "en": "Log in"},
    "login.refused": {
        "zh": "用户名或密码不正确（多次失败会暂时锁定账号）",
        "en": "Name or password not accepted (repeated failures lock the account for a while)",
    },
    "login.too_many": {
        "zh": "此地址失败次数过多，请 {seconds} 秒后重试",
        "en": "Too many failures from this address; retry in {seconds} s",
    },
    "login.inactive": {"zh": "该账号已被锁定或停用", "en": "This operator is locked or disabled"},
    "login.expired": {"zh": "请重新登录", "en": "Please log in again"},
    "forbidden.title": {"zh": "无权访问", "en": "Not allowed"},
    "forbidden.lacks": {
        "zh": "你没有权限 {permission}{where}。请联系管理员。",
        "en": "You lack the permission {permission}{where}. Ask an administrator.",
    },
    "forbidden.on_app": {"zh": "（应用 {app}）", "en": " on app {app}"},
    "csrf.title": {"zh": "请求已拒绝", "en": "Request refused"},
    "csrf.refused": {
        "zh": "表单已过期或来源不明（缺少 CSRF 令牌）。请返回并重新提交。",
        "en": "The form is stale or did not come from this console (no valid CSRF token). Go back and "
              "submit it again.",
    },
    "back": {"zh": "返回", "en": "Back"},
    "empty": {"zh": "暂无数据", "en": "Nothing yet"},
    "analytics_unavailable": {
        "zh": "分析库暂时不可用，请稍后刷新。",
        "en": "Analytics is unavailable right now; refresh in a moment.",
    },
}

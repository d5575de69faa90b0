"""The Apps page's words."""

WORDS = {
    "apps.title": {"zh": "上游应用", "en": "Upstream apps"},
    "apps.name": {"zh": "应用名", "en": "Name"},
    "apps.description": {"zh": "说明", "en": "Description"},
    "apps.channels": {"zh": "可用渠道", "en": "Channels"},
    "apps.state": {"zh": "状态", "en": "State"},
    "apps.actions": {"zh": "操作", "en": "Actions"},
    "apps.enabled": {"zh": "启用", "en": "Enabled"},
    "apps.disabled": {"zh": "已停用", "en": "Disabled"},
    "apps.enable": {"zh": "启用", "en": "Enable"},
    "apps.disable": {"zh": "停用", "en": "Disable"},
    "apps.rotate": {"zh": "更换密钥", "en": "Rotate key"},
    "apps.save_channels": {"zh": "保存渠道", "en": "Save channels"},
    "apps.none": {"zh": "没有可查看的应用", "en": "No apps you may read"},
    "apps.register": {"zh": "注册应用", "en": "Register an app"},
    "apps.register_submit": {"zh": "注册", "en": "Register"},
    "apps.key_once": {"zh": "应用 {app} 的新密钥", "en": "The new key of app {app}"},
    "apps.key_once_hint": {
        "zh": "密钥只显示这一次，系统不保存明文。请立即复制并妥善保管。",
        "en": "Shown this once: Switchboard keeps only its hash. Copy it now and keep it safe.",
    },
    "apps.key": {"zh": "API 密钥", "en": "API key"},
    "apps.signing_key": {"zh": "事件签名密钥", "en": "Events signing key"},
}

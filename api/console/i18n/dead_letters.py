"""The Dead letters page's words."""

WORDS = {
    "title": {"zh": "死信", "en": "Dead letters"},
    "reason": {"zh": "原因包含", "en": "Reason contains"},
    "reason_short": {"zh": "原因", "en": "Reason"},
    "app": {"zh": "应用", "en": "App"},
    "stage": {"zh": "阶段", "en": "Stage"},
    "any": {"zh": "全部", "en": "any"},
    "since": {"zh": "起始（如 1d、2026-11-01）", "en": "Since (e.g. 1d, 2026-11-01)"},
    "filter": {"zh": "筛选", "en": "Filter"},
    "clear": {"zh": "清除", "en": "Clear"},
    "received": {"zh": "收到时间（UTC）", "en": "Received (UTC)"},
    "event_id": {"zh": "事件 ID", "en": "Event id"},
    "replayable": {"zh": "可重放", "en": "Replayable"},
    "yes": {"zh": "是", "en": "yes"},
    "no": {"zh": "否", "en": "no"},
    "inspect": {"zh": "查看", "en": "Inspect"},
    "matched": {"zh": "共 {count} 封", "en": "{count} letters"},
    "none": {"zh": "没有符合条件的死信", "en": "No dead letter matches"},
    "previous": {"zh": "上一页", "en": "Previous page"},
    "next": {"zh": "下一页", "en": "Next page"},
    "unavailable": {
        "zh": "暂时无法读取消息队列，请稍后刷新。",
        "en": "The broker cannot be read right now; refresh in a moment.",
    },
    "letter": {"zh": "死信 {id}", "en": "Dead letter {id}"},
    "source": {"zh": "原记录位置", "en": "Source record"},
    "payload": {"zh": "内容（敏感字段已隐藏）", "en": "Payload (secret-named fields masked)"},
    "truncated": {"zh": "内容过大，仅保留开头部分", "en": "Too large: only its head was kept"},
    "replay": {"zh": "重放", "en": "Replay"},
    "replay_help": {
        "zh": "留空则按原样重放；或粘贴修正后的事件 JSON（同一应用，替换掉 ****** 隐藏值）。",
        "en": "Leave empty to replay it as kept, or paste the corrected event as JSON (same app; replace "
              "the masked ****** values).",
    },
    "corrected": {"zh": "修正后的事件（可选）", "en": "Corrected event (optional)"},
    "done.published": {"zh": "已重新发布到事件队列。", "en": "Published to the events topic again."},
    "done.duplicate": {
        "zh": "已重新发布，但该事件此前已被接收：入口会将其视为重复而丢弃。",
        "en": "Published again, but the event was accepted before: ingest drops it as a duplicate.",
    },
    "back": {"zh": "返回列表", "en": "Back to the list"},
    "not_replayable": {
        "zh": "此死信不能重放（不是入口拒绝的完整事件）。",
        "en": "This letter cannot be replayed (not a whole event refused by ingest).",
    },
}

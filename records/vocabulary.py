"""The platform's closed vocabularies (channels, categories, priorities, statuses) and names."""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import StringConstraints

ChannelName = Literal["sms", "email", "push", "wechat_oa", "wechat_mp", "inbox", "webhook", "robot"]
CHANNELS: tuple[ChannelName, ...] = get_args(ChannelName)
Category = Literal["verification", "transactional", "notice", "marketing", "alert"]
Priority = Literal["urgent", "high", "normal", "low"]
CATEGORIES: tuple[Category, ...] = get_args(Category)
PRIORITIES: tuple[Priority, ...] = get_args(Priority)
Status = Literal[
    "decided",
    "suppressed",
    "capped",
    "deferred",
    "sent",
    "delivered",
    "failed",
    "opened",
    "clicked",
    "read",
    "converted",
    "dead_lettered",
    "expired",
    "held_out",
    "pending_approval",
    "approved",
    "rejected",
    "over_budget",
    "erased",
    "cancelled",
    "recalled",
]
STATUSES: tuple[Status, ...] = get_args(Status)

Name = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")]

"""What rules test about one delivery, and the same `when` semantics in plain Python.

durable-rules picks the winning rule; caps, quiet hours windows, `explain` and `simulate` test
conditions here, so both must agree (a unit test checks that they do on random deliveries).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from records.topics import EventCore
from rules.schema import CapExempt, When, duration_text
from state.users import User


@dataclass(frozen=True)
class Facts:
    """One delivery as rules see it: the event's fields, the user's bindings, tags and activity."""

    user_id: str
    category: str
    priority: str
    type: str
    app: str
    template: str
    campaign: str
    channel_pref: str
    bound: frozenset[str]
    tags: frozenset[str]
    idle: timedelta | None
    """How long since the user was last active; None if never."""
    whitelisted: bool = False
    """On the whitelist (白名单): the user or an address they are reached at."""


def facts_of(
    event: EventCore,
    user: User,
    now: datetime | None,
    last_active_at: datetime | None,
    *,
    whitelisted: bool = False,
) -> Facts:
    at = now or datetime.now(UTC)
    return Facts(
        user_id=user.user_id,
        category=event.category,
        priority=event.priority,
        type=event.type,
        app=event.app,
        template=event.template,
        campaign=event.campaign,
        channel_pref=user.channel_pref or "",
        bound=frozenset(user.bindings),
        tags=frozenset(user.tags),
        idle=None if last_active_at is None else max(at - last_active_at, timedelta(0)),
        whitelisted=whitelisted,
    )


def active_within(facts: Facts, window: timedelta) -> bool:
    return facts.idle is not None and facts.idle <= window


def inactive_for(facts: Facts, window: timedelta) -> bool:
    """Never active counts as inactive; `inactive_for: 7d` is exactly "not `active_within: 7d`"."""
    return facts.idle is None or facts.idle > window


_ANY_OF = ("category", "priority", "type", "app", "template", "campaign", "channel_pref")


def holds(when: When, facts: Facts) -> bool:
    """True if every condition of `when` holds for this delivery."""
    for key in _ANY_OF:
        values = getattr(when, key)
        if values is not None and getattr(facts, key) not in values:
            return False
    if when.bound is not None and not set(when.bound) <= facts.bound:
        return False
    if when.tags_any is not None and facts.tags.isdisjoint(when.tags_any):
        return False
    if when.active_within is not None and not active_within(facts, when.active_within):
        return False
    return when.inactive_for is None or inactive_for(facts, when.inactive_for)


def exempt(rule: CapExempt, facts: Facts) -> str | None:
    """Why a cap does not count this delivery, or None if it does."""
    if rule.category is not None and facts.category in rule.category:
        return f"category {facts.category}"
    if rule.priority is not None and facts.priority in rule.priority:
        return f"priority {facts.priority}"
    if rule.tags_any is not None and not facts.tags.isdisjoint(rule.tags_any):
        return "tag " + ", ".join(sorted(facts.tags.intersection(rule.tags_any)))
    if rule.users is not None and facts.user_id in rule.users:
        return f"user {facts.user_id} is on the exemption list"
    if rule.whitelist and facts.whitelisted:
        return f"user {facts.user_id} is whitelisted"
    return None


def why_not(when: When, facts: Facts) -> str | None:
    """The first condition of `when` this delivery fails, in words; None if they all hold."""
    for key in _ANY_OF:
        values = getattr(when, key)
        if values is not None and getattr(facts, key) not in values:
            return f"{key} is {getattr(facts, key) or '(none)'!r}, not {' or '.join(values)}"
    if when.bound is not None and not set(when.bound) <= facts.bound:
        return "no address on " + ", ".join(c for c in when.bound if c not in facts.bound)
    if when.tags_any is not None and facts.tags.isdisjoint(when.tags_any):
        return "has none of the tags " + ", ".join(when.tags_any)
    idle = "never active" if facts.idle is None else f"last active {_ago(facts.idle)} ago"
    if when.active_within is not None and not active_within(facts, when.active_within):
        return f"not active within {_ago(when.active_within)} ({idle})"
    if when.inactive_for is not None and not inactive_for(facts, when.inactive_for):
        return f"active within {_ago(when.inactive_for)} ({idle})"
    return None


def _ago(duration: timedelta) -> str:
    return duration_text(timedelta(seconds=int(duration.total_seconds())))

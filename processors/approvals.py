"""Approvals in the flow: ingest holds an event a policy covers (`ApprovalGate`), and a worker timer
follows held items up (`ApprovalDesk`): tells each level's approvers through Switchboard's own
channels, releases an approved event into the flow once, writes the `approved`, `rejected` and
`expired` rows, and expires what waited too long.

Every effect is at least once and harmless twice: a release carries the approval's id, which ingest
checks against the approval record and deduplicates on; a notice's event id names the item and level;
rows collapse in ClickHouse's ReplacingMergeTree.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from processors.failures import is_infrastructure
from records.signing import signature
from records.topics import Audience, Event, Receipt, Status
from settings.permissions import ALL_APPS
from state.approval_policies import ApprovalPolicy, PolicyStore, strictest
from state.approvals import ApprovalItem, ApprovalStore, Conflict, approval_id_for
from state.operators import OperatorStore
from state.segments import SegmentStore
from state.template_store import PublicationState, TemplateStore
from state.uploads import UploadStore
from state.users import AudienceIndex, UserDirectory

log = logging.getLogger("switchboard.approvals")

NOTICE_APP = "switchboard"
"""The app Switchboard's own notices are sent as; its events are never held (or approval requests
could wait for approval)."""
NOTICE_TEMPLATE = "approval_request"
POLICY_CACHE_SECONDS = 2.0
RETRY_SECONDS = 60
_OUTCOME_STATUS: dict[str, Status] = {"approved": "approved", "rejected": "rejected", "expired": "expired"}


def subject_of(event: Event) -> str:
    return f"{event.app}:{event.event_id}"


def describe_audience(audience: Audience) -> str:
    if audience.user_ids:
        return f"user_ids ({len(set(audience.user_ids))})"
    if audience.addresses:
        return f"addresses ({len(audience.addresses)})"
    if audience.tags:
        return f"tags {', '.join(sorted(set(audience.tags)))}"
    if audience.segment:
        return f"segment {audience.segment}"
    if audience.upload:
        return f"upload {audience.upload}"
    return "everyone"


class ApprovalGate:
    """What ingest asks: does a policy hold this event (then it is held), and is a release genuine."""

    def __init__(
        self,
        policies: PolicyStore,
        store: ApprovalStore,
        directory: UserDirectory,
        cache_seconds: float = POLICY_CACHE_SECONDS,
        segments: SegmentStore | None = None,
        uploads: UploadStore | None = None,
    ) -> None:
        self._uploads = uploads
        self._policies = policies
        self._segments = segments  # counts a defined segment exactly (state.segments)
        self._store = store
        self._directory = directory
        self._cache_seconds = cache_seconds
        self._cached: tuple[float, list[ApprovalPolicy]] | None = None

    async def hold(self, event: Event) -> Receipt | None:
        """The `pending_approval` row if a policy holds `event` (stored durably first), else None."""
        if event.app == NOTICE_APP:
            return None
        covering = [p for p in await self._current() if p.covers(event)]
        if not covering:
            return None
        size = None
        if any(p.needs_audience_size for p in covering):
            size = await self.audience_size(event.audience)
        policy = strictest([p for p in covering if p.matches(event, size)])
        if policy is None:
            return None
        if size is None:
            size = await self.audience_size(event.audience)
        now = datetime.now(UTC)
        subject = subject_of(event)
        item, _ = await self._store.hold(
            ApprovalItem(
                approval_id=approval_id_for("message", subject),
                kind="message",
                subject=subject,
                app=event.app,
                policy=policy.name,
                levels=tuple(policy.levels),
                submitted_by=event.submitted_by,
                created_at=now,
                expires_at=now + policy.expiry,
                audience=describe_audience(event.audience),
                audience_size=size,
                payload=event.model_dump(mode="json"),
            )
        )
        return pending_row(event, item)

    async def check_release(self, event: Event) -> str:
        """'' when `event` is the very event an approved item holds; else what is wrong with it."""
        item = await self._store.get(event.approval)
        if item is None or item.kind != "message":
            return f"approval stamp {event.approval!r} names no held message"
        if item.subject != subject_of(event):
            return f"approval {event.approval} is for {item.subject}, not {subject_of(event)}"
        if item.state != "approved":
            return f"approval {event.approval} is {item.state}, not approved"
        if Event.model_validate(item.payload) != event.model_copy(update={"approval": ""}):
            return f"the event differs from the one approval {event.approval} approved"
        return ""

    async def audience_size(self, audience: Audience) -> int:
        """Exact for listed users and addresses; the sizes of the tag, segment or everyone sets else
        (a person in two tags counts twice: an upper bound, which is what a threshold needs)."""
        if audience.user_ids:
            return len(set(audience.user_ids))
        if audience.addresses:
            return len(audience.addresses)
        if audience.upload:
            # Unknown or expired counts 0: ingest dead-letters it once released.
            return (await self._uploads.size(audience.upload) or 0) if self._uploads is not None else 0
        if audience.tags:
            index = AudienceIndex.of_tags(audience.tags)
        elif audience.segment and self._segments is not None:
            return await self._segments.count(audience.segment) or 0
        elif audience.segment:
            index = AudienceIndex.of_segment(audience.segment)
        else:
            index = AudienceIndex.everyone()
        return await self._directory.walk.prepare(index)

    async def _current(self) -> list[ApprovalPolicy]:
        # Read at most every few seconds: one Redis read per event would cost the flow a round trip.
        now = time.monotonic()
        if self._cached is None or now - self._cached[0] >= self._cache_seconds:
            self._cached = (now, await self._policies.all())
        return self._cached[1]


def pending_row(event: Event, item: ApprovalItem) -> Receipt:
    reason = (
        f"held by approval policy {item.policy!r}: approval {item.approval_id}, "
        f"{len(item.levels)} level(s) ({', '.join(item.levels)}), audience {item.audience} "
        f"~{item.audience_size}"
    )
    return Receipt.of(event, "", "pending_approval", reason=reason)


@dataclass(frozen=True)
class Approver:
    """An operator who may decide at a level, and the user id they are reached at."""

    name: str
    user_id: str


class ApproverDirectory(Protocol):
    """The operators holding a role over an app (the access part's operator store)."""

    async def approvers(self, role: str, app: str) -> list[Approver]: ...


class OperatorApprovers:
    """The active operators holding `role` over `app` with a user id (`state.operators`)."""

    def __init__(self, operators: OperatorStore) -> None:
        self._operators = operators

    async def approvers(self, role: str, app: str) -> list[Approver]:
        return [
            Approver(operator.name, operator.user_id)
            for operator in await self._operators.list()
            if operator.state == "active"
            and operator.user_id
            and any(g.role == role and (ALL_APPS in g.apps or app in g.apps) for g in operator.grants)
        ]


class SigningKeys(Protocol):
    """The apps' events signing keys (`state.apps.AppRegistry`)."""

    async def signing_key(self, name: str) -> str | None: ...


EmitEvent = Callable[[Event, bytes, str], Awaitable[None]]
"""Produce `event` (as the exact bytes `value`) on its lane's events topic with its signature header."""
RecordRows = Callable[[Sequence[Receipt]], Awaitable[None]]


@dataclass(frozen=True)
class Effects:
    """How the desk acts on the flow: `emit` an event onto its lane's events topic, `record` rows."""

    emit: EmitEvent
    record: RecordRows


class ApprovalDesk:
    """The worker's follow-up of held items: notices, releases, rows, expiry."""

    def __init__(
        self,
        store: ApprovalStore,
        approvers: ApproverDirectory,
        signing: SigningKeys | None = None,
        templates: TemplateStore | None = None,
    ) -> None:
        self._store = store
        self._templates = templates  # what an approved template version is set live in
        self._approvers = approvers
        # Ingest checks every events record's signature: what the worker puts there is signed as its app.
        self._signing = signing

    async def _emit(self, event: Event, effects: Effects) -> None:
        value = event.model_dump_json().encode()
        key = await self._signing.signing_key(event.app) if self._signing is not None else None
        if self._signing is not None and key is None:
            log.warning("app %s has no events signing key: ingest will refuse %s (rotate the app's key)",
                        event.app, event.event_id)
        await effects.emit(event, value, signature(value, key) if key else "")

    async def follow_up(self, effects: Effects, limit: int = 100) -> int:
        """Handle the items due now; returns how many were looked at."""
        ids = await self._store.due(datetime.now(UTC), limit)
        for approval_id in ids:
            try:
                await self._follow(approval_id, effects)
            except Conflict:
                continue  # changed while we looked: its change left it due, the next round sees it
            except Exception as exc:
                if is_infrastructure(exc):
                    raise
                # One item that cannot be followed up must not stop the others: look again later.
                log.exception("following up approval %s failed; trying again in %d s", approval_id,
                              RETRY_SECONDS)
                await self._store.postpone(approval_id, RETRY_SECONDS)
        return len(ids)

    async def _follow(self, approval_id: str, effects: Effects) -> None:
        found = await self._store.read(approval_id)
        if found is None:
            await self._store.forget_due(approval_id)
            return
        item, version = found
        if item.expired_by(datetime.now(UTC)):
            item = expire(item)
            version = await self._store.change(version, item, due_now=False)
        if item.state == "pending" and item.notified_level < item.level:
            await self._notify(item, effects)
            item = item.model_copy(update={"notified_level": item.level})
            version = await self._store.change(version, item, due_now=False)
        if item.state != "pending" and not item.settled:
            await self._settle(item, effects)
            item = item.model_copy(update={"settled": True})
            version = await self._store.change(version, item, due_now=False)
        next_look = item.expires_at if item.state == "pending" else None
        await self._store.reschedule(approval_id, version, next_look)

    async def _notify(self, item: ApprovalItem, effects: Effects) -> None:
        role = item.role
        if role is None:
            return
        excluded = item.deciders() | {item.submitted_by.removeprefix("operator:")}
        people = [a for a in await self._approvers.approvers(role, item.app) if a.name not in excluded]
        user_ids = sorted({a.user_id for a in people if a.user_id})
        if not user_ids:
            log.warning("approval %s waits at level %d (role %s): no approver with a user id to tell",
                        item.approval_id, item.level + 1, role)
            return
        await self._emit(notice_for(item, role, user_ids), effects)

    async def _settle(self, item: ApprovalItem, effects: Effects) -> None:
        if item.kind == "template_version":
            await settle_template_version(item, self._templates)
            return
        event = Event.model_validate(item.payload)
        if item.state == "approved":
            await self._emit(event.model_copy(update={"approval": item.approval_id}), effects)
        row = Receipt.of(event, "", _OUTCOME_STATUS[item.state], reason=outcome_reason(item))
        await effects.record([row])


async def settle_template_version(item: ApprovalItem, templates: TemplateStore | None) -> None:
    """Approved: the version goes live (workers take it within seconds). Rejected or expired: it stays
    not live, and its publication says why."""
    name, number = str(item.payload.get("template", "")), int(item.payload.get("version", 0))
    if templates is None or not name or number < 1:
        log.warning("approval %s of template version %s: nothing to set live here", item.approval_id,
                    item.subject)
        return
    current = await templates.publication(name, number)
    if current is None or current.approval_id != item.approval_id:
        log.warning("approval %s of %s is no longer the version's publication request; left as it is",
                    item.approval_id, item.subject)
        return
    if item.state == "approved":
        await templates.set_live(name, number)
        log.info("template %s version %d is live (%s)", name, number, outcome_reason(item))
    state: PublicationState = "approved" if item.state == "approved" else (
        "rejected" if item.state == "rejected" else "expired")
    await templates.record_publication(name, number, current.model_copy(
        update={"state": state, "reason": outcome_reason(item), "decided_at": datetime.now(UTC)}))


def expire(item: ApprovalItem) -> ApprovalItem:
    reason = (
        f"not approved within {_duration(item.expires_at - item.created_at)} under policy {item.policy!r}: "
        f"waited at level {item.level + 1} of {len(item.levels)} (role {item.role})"
    )
    return item.model_copy(update={"state": "expired", "reason": reason})


def _duration(length: timedelta) -> str:
    seconds = int(length.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0 and seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def outcome_reason(item: ApprovalItem) -> str:
    if item.state == "approved":
        who = ", ".join(f"{d.operator} ({d.role})" for d in item.decisions if d.verdict == "approve")
        return f"approved under policy {item.policy!r} by {who}"
    return item.reason


def notice_for(item: ApprovalItem, role: str, user_ids: list[str]) -> Event:
    """Switchboard's own notice to the approvers of the item's current level."""
    return Event.model_validate(
        {
            "event_id": f"approval.{item.approval_id}.{item.level + 1}",
            "app": NOTICE_APP,
            "type": "approval.request",
            "template": NOTICE_TEMPLATE,
            "category": "notice",
            "priority": "high",
            "audience": {"user_ids": user_ids},
            "data": {
                "approval_id": item.approval_id,
                "kind": item.kind,
                "subject": item.subject,
                "app": item.app,
                "policy": item.policy,
                "level": item.level + 1,
                "levels": len(item.levels),
                "role": role,
                "audience": item.audience,
                "audience_size": item.audience_size,
                "submitted_by": item.submitted_by or "unknown",
                "expires_at": item.expires_at.isoformat(timespec="minutes"),
            },
        }
    )

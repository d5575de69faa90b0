"""What deciding on held items and managing approval policies means, for the API and the CLI alike:
who may see and decide what, the distinct-approver rules, and the audit record of every decision and
policy change (refused attempts too, with outcome `denied`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from records.audit import AuditRecord
from settings.permissions import ALL_APPS, Principal
from state.approval_policies import ApprovalPolicy, PolicyStore
from state.approvals import ApprovalItem, ApprovalState, ApprovalStore, Conflict, Decision, Verdict

DECIDE = "approvals:decide"
MANAGE = "approvals:manage"
MAX_COMMENT = 1000
_ATTEMPTS = 3


class ApprovalRefused(Exception):
    """A refusal with its HTTP status and a sentence saying why (the CLI prints the sentence)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class AuditSink(Protocol):
    async def publish_audit(self, record: AuditRecord) -> None: ...


class Previews(Protocol):
    """Renders a template for a preview (`channels.templates.TemplateCatalog`)."""

    def channels_of(self, template: str) -> frozenset[str]: ...

    def render(self, template: str, channel: str, data: Mapping[str, Any], user: None) -> Any: ...


class RoleLookup(Protocol):
    """Every role with its permissions (`state.roles.RoleStore`)."""

    async def all(self) -> dict[str, frozenset[str]]: ...


@dataclass(frozen=True)
class Approvals:
    """The approvals' collaborators: held items, policies, previews, and the roles a level may name."""

    store: ApprovalStore
    policies: PolicyStore
    previews: Previews | None = None
    roles: RoleLookup | None = None


def holds_role(principal: Principal, role: str, app: str) -> bool:
    """Whether the principal holds `role` itself (not just its permissions) over `app`."""
    return any(g.role == role and (ALL_APPS in g.apps or app in g.apps) for g in principal.grants)


def waits_for(principal: Principal, item: ApprovalItem) -> bool:
    """The item's current level is this principal's to decide, and nothing rules them out."""
    role = item.role
    return (
        role is not None
        and principal.kind == "operator"
        and principal.allows(DECIDE, item.app)
        and holds_role(principal, role, item.app)
        and item.submitted_by != f"operator:{principal.name}"
        and principal.name not in item.deciders()
    )


async def listing(
    approvals: Approvals, principal: Principal, state: ApprovalState | None, limit: int
) -> list[ApprovalItem]:
    """Pending: what waits for this principal. Other states (None: all): the items of the apps the
    principal may decide on."""
    if state == "pending":
        return [item for item in await approvals.store.listing("pending", limit * 5)
                if waits_for(principal, item)][:limit]
    items = await approvals.store.listing(state, limit * 5)
    return [item for item in items if principal.allows(DECIDE, item.app)][:limit]


async def show(approvals: Approvals, principal: Principal, approval_id: str) -> ApprovalItem:
    item = await approvals.store.get(approval_id)
    if item is None:
        raise ApprovalRefused(404, f"no approval {approval_id!r}")
    if not principal.allows(DECIDE, item.app):
        raise ApprovalRefused(403, f"{principal.kind} {principal.name!r} lacks permission {DECIDE} on app "
                                   f"{item.app!r}")
    return item


def preview(approvals: Approvals, item: ApprovalItem) -> dict[str, dict[str, Any]]:
    """The held message rendered on each channel its template has, without a recipient ('' when a
    channel does not render without one)."""
    if item.kind == "template_version":  # rendered from its samples when its publication was asked
        shown = item.payload.get("preview")
        return shown if isinstance(shown, dict) else {}
    template, data = item.payload.get("template"), item.payload.get("data") or {}
    if approvals.previews is None or item.kind != "message" or not isinstance(template, str):
        return {}
    return rendered_parts(approvals.previews, template, data if isinstance(data, dict) else {})


def rendered_parts(previews: Previews, template: str, data: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """`template` rendered with `data` on each of its channels, without a recipient: each channel's
    fields, or `error` saying why it does not render (e.g. a part that needs the recipient's profile).
    What an approver sees and what the console's composer previews."""
    rendered: dict[str, dict[str, Any]] = {}
    for channel in sorted(previews.channels_of(template)):
        try:
            message = previews.render(template, channel, data, None)
        except Exception as exc:  # a preview is a courtesy: a part that needs a recipient says so
            rendered[channel] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
            continue
        fields = message.model_dump(exclude={"template", "channel", "template_ids"})
        rendered[channel] = {key: value for key, value in fields.items() if value}
    return rendered


async def decide(
    approvals: Approvals,
    audit: AuditSink,
    principal: Principal,
    approval_id: str,
    verdict: Verdict,
    comment: str,
    source: str,
) -> ApprovalItem:
    """Record the principal's verdict at the item's current level; audited, refusals included."""
    action = f"approval.{verdict}"
    try:
        before, after = await _decided(approvals, principal, approval_id, verdict, comment)
    except ApprovalRefused as refused:
        if refused.status != 404:
            denied = _record(principal, action, approval_id, source, "denied", refused.detail)
            await audit.publish_audit(denied)
        raise
    await audit.publish_audit(
        _record(principal, action, approval_id, source, "ok", comment, app=after.app,
                before=_standing(before), after=_standing(after))
    )
    return after


async def _decided(
    approvals: Approvals, principal: Principal, approval_id: str, verdict: Verdict, comment: str
) -> tuple[ApprovalItem, ApprovalItem]:
    if len(comment) > MAX_COMMENT:
        raise ApprovalRefused(422, f"the comment is {len(comment)} characters; at most {MAX_COMMENT}")
    if principal.kind != "operator":
        raise ApprovalRefused(403, "only operators approve or reject; an app key or end-user token cannot")
    for _ in range(_ATTEMPTS):
        found = await approvals.store.read(approval_id)
        if found is None:
            raise ApprovalRefused(404, f"no approval {approval_id!r}")
        item, version = found
        _check_may_decide(principal, item)
        changed = _with_verdict(item, principal, verdict, comment)
        try:
            await approvals.store.change(version, changed)
        except Conflict:
            continue  # another decision or the expiry came first: judge again on what is there now
        return item, changed
    raise ApprovalRefused(409, f"approval {approval_id} keeps changing under this decision; try again")


def _check_may_decide(principal: Principal, item: ApprovalItem) -> None:
    name = principal.name
    if not principal.allows(DECIDE, item.app):
        raise ApprovalRefused(403, f"operator {name!r} lacks permission {DECIDE} on app {item.app!r}")
    if item.state != "pending":
        raise ApprovalRefused(409, f"approval {item.approval_id} is already {item.state}")
    if item.expired_by(datetime.now(UTC)):
        raise ApprovalRefused(409, f"approval {item.approval_id} expired at {item.expires_at.isoformat()}")
    role = item.role or ""
    where = f"level {item.level + 1} of {len(item.levels)}"
    if not holds_role(principal, role, item.app):
        raise ApprovalRefused(403, f"{where} of approval {item.approval_id} is decided by role {role!r}, "
                                   f"which operator {name!r} does not hold on app {item.app!r}")
    if item.submitted_by == f"operator:{name}":
        raise ApprovalRefused(409, f"operator {name!r} submitted this message; its approvers must be "
                                   "other operators")
    earlier = next((d for d in item.decisions if d.operator == name), None)
    if earlier is not None:
        raise ApprovalRefused(409, f"operator {name!r} already decided level {earlier.level + 1}; "
                                   f"{where} needs a different approver")


def _with_verdict(item: ApprovalItem, principal: Principal, verdict: Verdict, comment: str) -> ApprovalItem:
    role = item.role or ""
    decision = Decision(level=item.level, role=role, operator=principal.name, verdict=verdict,
                        comment=comment, at=datetime.now(UTC))
    decisions = (*item.decisions, decision)
    if verdict == "reject":
        reason = f"rejected by {principal.name} at level {item.level + 1} ({role})"
        return item.model_copy(update={"state": "rejected", "decisions": decisions,
                                       "reason": f"{reason}: {comment}" if comment else reason})
    level = item.level + 1
    state: ApprovalState = "approved" if level == len(item.levels) else "pending"
    return item.model_copy(update={"level": level, "state": state, "decisions": decisions})


def _standing(item: ApprovalItem) -> dict[str, Any]:
    return {"state": item.state, "level": item.level, "levels": list(item.levels)}


async def visible_policies(approvals: Approvals, principal: Principal) -> list[ApprovalPolicy]:
    """The policies whose every app the principal manages (a policy over every app: a `*` grant)."""
    return [p for p in await approvals.policies.all() if _may_manage(principal, p)]


async def put_policy(
    approvals: Approvals, audit: AuditSink, principal: Principal, policy: ApprovalPolicy, source: str
) -> ApprovalPolicy | None:
    """Create or replace a policy; returns the one replaced. Audited."""
    await _check_levels(approvals, policy)
    previous = await approvals.policies.get(policy.name)
    for checked in (policy, previous):
        if checked is not None and not _may_manage(principal, checked):
            raise ApprovalRefused(403, _scope_refusal(principal, checked))
    await approvals.policies.put(policy)
    await audit.publish_audit(
        _record(principal, "approval_policy.put", policy.name, source, "ok", "",
                target_kind="approval_policy",
                before=None if previous is None else previous.model_dump(mode="json"),
                after=policy.model_dump(mode="json"))
    )
    return previous


async def remove_policy(
    approvals: Approvals, audit: AuditSink, principal: Principal, name: str, source: str
) -> ApprovalPolicy:
    """Remove a policy (held items keep the levels they were held with). Audited."""
    policy = await approvals.policies.get(name)
    if policy is None:
        raise ApprovalRefused(404, f"no approval policy {name!r}")
    if not _may_manage(principal, policy):
        raise ApprovalRefused(403, _scope_refusal(principal, policy))
    await approvals.policies.remove(name)
    await audit.publish_audit(
        _record(principal, "approval_policy.remove", name, source, "ok", "", target_kind="approval_policy",
                before=policy.model_dump(mode="json"))
    )
    return policy


async def _check_levels(approvals: Approvals, policy: ApprovalPolicy) -> None:
    """Each level names a role that exists and may decide: otherwise nobody could ever approve it."""
    if approvals.roles is None:
        return
    known = await approvals.roles.all()
    for index, role in enumerate(policy.levels):
        if role not in known:
            raise ApprovalRefused(422, f"levels[{index}]: no role named {role!r} "
                                       f"(roles: {', '.join(sorted(known))})")
        if DECIDE not in known[role]:
            deciders = sorted(name for name, permissions in known.items() if DECIDE in permissions)
            raise ApprovalRefused(422, f"levels[{index}]: role {role!r} does not carry {DECIDE}, so nobody "
                                       f"could decide that level (roles that do: {', '.join(deciders)})")


def _may_manage(principal: Principal, policy: ApprovalPolicy) -> bool:
    apps = policy.apps or [ALL_APPS]
    return all(principal.allows(MANAGE, app) for app in apps)


def _scope_refusal(principal: Principal, policy: ApprovalPolicy) -> str:
    scope = f"apps {', '.join(policy.apps)}" if policy.apps else "every app (the policy names no apps)"
    who = f"{principal.kind} {principal.name!r}"
    return f"{who} lacks permission {MANAGE} on {scope} of policy {policy.name!r}"


def _record(
    principal: Principal,
    action: str,
    target: str,
    source: str,
    outcome: str,
    reason: str,
    app: str = "",
    target_kind: str = "approval",
    before: Any = None,
    after: Any = None,
) -> AuditRecord:
    return AuditRecord.model_validate(
        {
            "actor": principal.name,
            "actor_kind": principal.kind,
            "source": source,
            "action": action,
            "target_kind": target_kind,
            "target": target,
            "app": app,
            "outcome": outcome,
            "reason": reason[:MAX_COMMENT],
            "before": before,
            "after": after,
        }
    )

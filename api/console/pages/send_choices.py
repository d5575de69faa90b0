"""What the composer offers the operator, each list as far as their role allows (apps they may compose
for, segments they may read with their counts, live uploads of those apps, the loaded rules' named
strategies, the templates), and the live preview: the message per channel (the approvals' preview), its
SMS segments, the recipients and the estimated cost (the campaigns API's estimate)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from api import campaign_flow as flow
from api.approval_service import rendered_parts
from api.campaign_service import CampaignDesk, estimate
from api.console.pages.send_form import ComposerForm, composition_of
from api.deps import ApiDeps
from channels.sms_segments import count_segments
from settings.permissions import ALL_APPS, Principal
from state.apps import AppRegistry
from state.segments import SegmentStore

MANAGE = "campaigns:manage"
@dataclass(frozen=True)
class SegmentChoice:
    """A segment offered by name. Not counted in the list: counting a defined segment walks its people
    (~0.25 s of CPU for 10,000, measured), so the preview counts the chosen one (the estimate)."""

    name: str
    app: str
    description: str


@dataclass(frozen=True)
class Choices:
    apps: list[str]
    segments: list[SegmentChoice]
    uploads: list[dict[str, object]]
    strategies: list[str]
    templates: list[str]


async def composer_choices(deps: ApiDeps, principal: Principal) -> Choices:
    apps = await _apps(deps, principal)
    return Choices(
        apps=apps,
        segments=await _segments(deps, principal),
        uploads=await _uploads(deps, principal, apps),
        strategies=_strategies(deps),
        templates=_templates(deps),
    )


async def _apps(deps: ApiDeps, principal: Principal) -> list[str]:
    allowed = principal.apps_for(MANAGE)
    if ALL_APPS in allowed:
        return sorted(a.name for a in await deps.apps.list() if a.enabled) if isinstance(
            deps.apps, AppRegistry) else []
    return sorted(allowed)


async def _segments(deps: ApiDeps, principal: Principal) -> list[SegmentChoice]:
    store = deps.segments
    if not isinstance(store, SegmentStore):
        return []
    readable = principal.apps_for("segments:read")
    shown = [s for s in await store.all()
             if s.app == ALL_APPS or ALL_APPS in readable or s.app in readable]
    return [SegmentChoice(s.name, s.app, s.description) for s in sorted(shown, key=lambda s: s.name)]


async def _uploads(deps: ApiDeps, principal: Principal, apps: list[str]) -> list[dict[str, object]]:
    if deps.uploads is None:
        return []
    mine = [app for app in apps if principal.allows("uploads:manage", app)]
    return [u.as_dict() for u in await deps.uploads.store.live(mine)]


def _strategies(deps: ApiDeps) -> list[str]:
    ruleset = deps.rules.ruleset if deps.rules is not None else None
    return [s.name for s in ruleset.strategies] if ruleset is not None else []


def _templates(deps: ApiDeps) -> list[str]:
    desk = deps.campaigns
    return sorted(desk.templates.names) if desk is not None and desk.templates is not None else []


@dataclass
class Preview:
    """The composer's live preview: each channel's rendered fields, the estimate, what is still wrong."""

    parts: dict[str, dict[str, Any]] = field(default_factory=dict)
    sms_segments: int | None = None
    estimate: dict[str, Any] | None = None
    errors: dict[str, str] = field(default_factory=dict)


async def composer_preview(deps: ApiDeps, desk: CampaignDesk, principal: Principal, form: ComposerForm
                           ) -> Preview:
    shown = Preview()
    parsed = composition_of(form)
    shown.errors = dict(parsed.errors)
    catalog = desk.templates
    if catalog is not None and form.template in catalog:
        data = _data(form)
        missing = catalog.check_data(form.template, data)
        if missing:  # the API's own refusal, once, rather than every channel failing to render
            shown.errors.setdefault("data", "; ".join(missing))
        else:
            shown.parts = rendered_parts(catalog, form.template, data)
            sms = shown.parts.get("sms", {})
            if isinstance(sms.get("text"), str):  # an SMS part renders `text`
                shown.sms_segments = count_segments(sms["text"]).segments
    elif form.template:
        shown.errors.setdefault("template", f"unknown template {form.template!r}")
    composition = parsed.composition
    if composition is not None and principal.allows(MANAGE, composition.app):
        channels = await flow.app_channels(deps, composition.app)
        shown.estimate = (await estimate(desk, composition, channels)).as_dict()
    return shown


def _data(form: ComposerForm) -> dict[str, Any]:
    """The template's variables as typed so far ({} until they are a JSON object)."""
    try:
        data = json.loads(form.data or "{}")
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}

"""What saving, previewing, diffing and publishing stored templates means, for the API and the CLI
alike: the checks at save (as a template file's at load), versions never changed, and publishing
straight to live or through an approval when a policy covers the app's templates."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from redis.asyncio import Redis

from channels.sensitive import SensitiveWords
from channels.template_versions import Pricing, StoredTemplateFeed, compile_version, diff, preview, prices_of
from channels.templates import TemplateCatalog, TemplateError
from records.vocabulary import Name
from settings import Settings
from settings.permissions import ALL_APPS, Principal
from state.approval_policies import PolicyStore, strictest
from state.approvals import ApprovalItem, ApprovalStore
from state.template_store import Publication, StoredTemplate, TemplateStore, TemplateVersion, Variable

log = logging.getLogger("switchboard.templates")
Part = dict[str, Any] | None


class TemplateRefused(Exception):
    """A refusal with its HTTP status and a sentence saying why (the CLI prints the sentence)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class VersionDraft(BaseModel):
    """A new version, in a template file's shape; `app` (and `description`) when it creates the template."""

    model_config = ConfigDict(extra="forbid")

    app: Name | None = Field(None, description="The owner app; required for a template's first version")
    description: Annotated[str, StringConstraints(max_length=500)] | None = None
    comment: Annotated[str, StringConstraints(max_length=1000)] = ""
    variables: list[Variable] = Field(default_factory=list)
    email: Part = None
    inbox: Part = None
    webhook: Part = None
    sms: Part = None
    push: Part = None
    wechat_oa: Part = None
    wechat_mp: Part = None
    robot: Part = None

    def parts(self) -> dict[str, dict[str, Any]]:
        channels = ("email", "inbox", "webhook", "sms", "push", "wechat_oa", "wechat_mp", "robot")
        return {c: part for c in channels if (part := getattr(self, c)) is not None}


@dataclass(frozen=True)
class Templates:
    """The collaborators: the store, the catalog (files win over names), policies and held items for
    publishing, and what previews check and price with."""

    store: TemplateStore
    catalog: TemplateCatalog
    approvals: ApprovalStore | None = None
    policies: PolicyStore | None = None
    words: SensitiveWords | None = None
    prices: Mapping[str, Pricing] = field(default_factory=dict)

    async def follow(self, every: float = 2.0) -> None:
        """Keep the catalog's stored templates the live versions (the API checks events with it)."""
        feed = StoredTemplateFeed(self.store, self.catalog)
        while True:
            try:
                await feed.refresh()
            except Exception:  # Redis away: keep the catalog, try again
                log.exception("following the stored templates failed; keeping them as they are")
            await asyncio.sleep(every)


def build_templates(settings: Settings, redis: Redis, catalog: TemplateCatalog) -> Templates:
    """The production wiring: the sensitive-word list and the providers' prices the worker uses."""
    from channels.providers import load_providers

    words_file = settings.sensitive_words
    words = SensitiveWords.from_file(words_file) if str(words_file) not in ("", ".") else None
    specs = load_providers(settings.providers, skip_unavailable=lambda _: None, require_env=False) if (
        settings.providers.is_file()
    ) else []
    return Templates(TemplateStore(redis), catalog, ApprovalStore(redis), PolicyStore(redis), words,
                     prices_of(specs))


async def template_of(templates: Templates, name: str) -> StoredTemplate:
    found = await templates.store.get(name)
    if found is None:
        file = templates.catalog.is_file(name)
        hint = " (a template file: edited in git, not through the API)" if file else ""
        raise TemplateRefused(404, f"no stored template {name!r}{hint}")
    return found


async def version_of(templates: Templates, name: str, number: int) -> TemplateVersion:
    found = await templates.store.version(name, number)
    if found is None:
        raise TemplateRefused(404, f"template {name!r} has no version {number}")
    return found


async def owner_app(templates: Templates, name: str, draft: VersionDraft) -> str:
    """The app a save acts on (to authorise before anything changes)."""
    existing = await templates.store.get(name)
    if existing is not None:
        if draft.app is not None and draft.app != existing.app:
            raise TemplateRefused(
                409, f"template {name!r} belongs to app {existing.app!r}, not {draft.app!r}"
            )
        return existing.app
    if templates.catalog.is_file(name):
        raise TemplateRefused(409, f"{name!r} is a template file (templates/{name}.yaml), kept in git; "
                                   "choose another name for a stored template")
    if draft.app is None:
        raise TemplateRefused(422, f"app: required for the first version of template {name!r} (its owner)")
    return draft.app


async def save(
    templates: Templates, author: str, name: str, draft: VersionDraft
) -> tuple[StoredTemplate, TemplateVersion, bool]:
    """Check the draft as the file loader would and store it as the next version; returns the template,
    the version and whether the template was created."""
    app = await owner_app(templates, name, draft)
    version = TemplateVersion(variables=tuple(draft.variables), parts=draft.parts(), author=author,
                              comment=draft.comment)
    try:
        compile_version(templates.catalog, name, version, draft.description or "")
    except TemplateError as exc:
        raise TemplateRefused(422, str(exc)) from None
    template, created = await templates.store.create(
        StoredTemplate(name=name, app=app, description=draft.description or "", created_by=author)
    )
    if template.app != app:  # another app's first version won the name meanwhile
        raise TemplateRefused(409, f"template {name!r} belongs to app {template.app!r}, not {app!r}")
    saved = await templates.store.save(name, version)
    return template, saved, created


async def render_preview(
    templates: Templates, name: str, number: int, data: Mapping[str, Any] | None
) -> dict[str, dict[str, Any]]:
    version = await version_of(templates, name, number)
    try:
        return preview(templates.catalog, name, version, data, templates.words, templates.prices)
    except TemplateError as exc:  # a version that no longer compiles (cannot happen for a saved one)
        raise TemplateRefused(422, str(exc)) from None


async def version_diff(templates: Templates, name: str, old: int, new: int) -> dict[str, str]:
    return diff(await version_of(templates, name, old), await version_of(templates, name, new), name)


async def publish(templates: Templates, requester: str, name: str, number: int) -> Publication:
    """Make the version live now, or hold it for approval when a policy covers the app's templates."""
    template = await template_of(templates, name)
    version = await version_of(templates, name, number)
    now = datetime.now(UTC)
    current = await templates.store.publication(name, number)
    if current is not None and current.state == "pending_approval":
        return current  # asked already: the same approval decides
    policies = await templates.policies.all() if templates.policies is not None else []
    policy = strictest([p for p in policies if p.covers_templates(template.app)])
    if policy is None or templates.approvals is None:
        await templates.store.set_live(name, number)
        publication = Publication(state="approved", requested_by=requester, requested_at=now,
                                  reason="no approval policy covers this app's templates", decided_at=now)
        await templates.store.record_publication(name, number, publication)
        return publication
    subject = f"{name}@{number}"
    # One approval per request: a version rejected once may be asked for again.
    digest = hashlib.blake2b(f"template_version\x1f{subject}\x1f{now.isoformat()}".encode(), digest_size=10)
    shown = preview(templates.catalog, name, version, None, templates.words, templates.prices)
    item = ApprovalItem(
        approval_id=f"ap_{digest.hexdigest()}", kind="template_version", subject=subject, app=template.app,
        policy=policy.name, levels=tuple(policy.levels), submitted_by=_as_submitter(version.author),
        created_at=now, expires_at=now + policy.expiry, audience=f"template version {subject}",
        payload={"template": name, "version": number, "requested_by": requester,
                 "preview": shown},
    )
    await templates.approvals.hold(item)
    publication = Publication(state="pending_approval", requested_by=requester, requested_at=now,
                              approval_id=item.approval_id, reason=f"held by approval policy {policy.name!r}")
    await templates.store.record_publication(name, number, publication)
    return publication


def _as_submitter(author: str) -> str:
    """The author as approvals name a submitter, so the author cannot approve their own version."""
    return author if ":" in author else f"operator:{author}"


async def listing(templates: Templates, principal: Principal) -> tuple[list[dict[str, Any]], list[str]]:
    """The stored templates of the apps `principal` reads templates of, each with its live number; and
    the template files' names (files are kept in git, readable by anyone who reads templates)."""
    apps = principal.apps_for("templates:read")
    live = await templates.store.live()
    stored = [
        {**t.model_dump(mode="json"), "live": live.get(t.name)}
        for t in await templates.store.all() if ALL_APPS in apps or t.app in apps
    ]
    return stored, [n for n in templates.catalog.names if templates.catalog.is_file(n)]


async def summary(templates: Templates, template: StoredTemplate) -> dict[str, Any]:
    """The template with its live version, its latest, and each version's publication."""
    versions = await templates.store.versions(template.name)
    publications = await templates.store.publications(template.name)
    return {
        **template.model_dump(mode="json"),
        "live": await templates.store.live_number(template.name),
        "latest": versions[-1].number if versions else None,
        "versions": [
            {"number": v.number, "author": v.author, "created_at": v.created_at.isoformat(),
             "comment": v.comment, "channels": sorted(v.parts),
             "publication": _dumped(publications.get(v.number))}
            for v in versions
        ],
    }


def _dumped(publication: Publication | None) -> dict[str, Any] | None:
    return None if publication is None else publication.model_dump(mode="json")

"""Saving and publishing a stored template as an operator's action: authorised on the owner app,
done through `api.template_service`, and audited. The `/v1/templates` router and the console's
Templates page both act through these, so both check and audit exactly alike."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from api import template_service as service
from api.access import Access, audit_record
from api.publisher import Publisher
from api.template_service import Templates, VersionDraft
from settings.permissions import Principal
from state.template_store import Publication, StoredTemplate, TemplateVersion


@dataclass(frozen=True)
class Saved:
    template: StoredTemplate
    version: TemplateVersion
    created: bool


async def readable(
    access: Access, templates: Templates, principal: Principal, name: str, permission: str = "templates:read"
) -> StoredTemplate:
    """The stored template, once `principal` holds `permission` on its app (404, 403 otherwise)."""
    template = await service.template_of(templates, name)
    access.authorize(principal, permission, template.app)
    return template


async def save_version(
    access: Access, publisher: Publisher, templates: Templates, request: Request, principal: Principal,
    name: str, draft: VersionDraft,
) -> Saved:
    """Save the draft as the next version (`templates:edit` on the owner app), audited `template.save`."""
    app = await service.owner_app(templates, name, draft)
    access.authorize(principal, "templates:edit", app)
    template, version, created = await service.save(templates, principal.name, name, draft)
    await publisher.publish_audit(audit_record(
        request, principal, "template.save", target_kind="template", target=f"{name}@{version.number}",
        app=template.app, reason=version.comment,
        before=None if version.number == 1 else {"latest": version.number - 1},
        after={"created": created, "version": version.number, "channels": sorted(version.parts),
               "variables": [v.name for v in version.variables]},
    ))
    return Saved(template, version, created)


async def publish_version(
    access: Access, publisher: Publisher, templates: Templates, request: Request, principal: Principal,
    name: str, number: int,
) -> Publication:
    """Make the version live or hold it for approval (`templates:publish` on the owner app), audited
    `template.publish`; the publication says which (`state` `pending_approval` when held)."""
    template = await readable(access, templates, principal, name, "templates:publish")
    before = await templates.store.live_number(name)
    publication = await service.publish(templates, principal.name, name, number)
    held = publication.state == "pending_approval"
    await publisher.publish_audit(audit_record(
        request, principal, "template.publish", target_kind="template", target=f"{name}@{number}",
        app=template.app,
        reason=publication.reason, before={"live": before},
        after={"live": before if held else number, "publication": publication.model_dump(mode="json")},
    ))
    return publication

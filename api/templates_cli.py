"""`switchboard templates list|show|save|preview|diff|publish`: stored templates from a shell, acting as
an operator (`--operator NAME`, that operator's personal token in `SWITCHBOARD_OPERATOR_TOKEN`), with the
API's permissions, checks and audit records (`api.template_service`); every mistake is one line."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import yaml
from pydantic import ValidationError
from redis.asyncio import Redis

from api import template_service as service
from api.operator_cli import TOKEN_VARIABLE, act_as_operator
from api.publisher import KafkaPublisher
from api.template_service import TemplateRefused, Templates, VersionDraft
from records.audit import AuditRecord
from settings import Settings, SwitchboardError
from settings.permissions import ALL_APPS, Principal
from state.template_store import StoredTemplate

_T = TypeVar("_T")
templates_cli = typer.Typer(no_args_is_help=True, help="Stored templates with versions.")

Operator = Annotated[
    str, typer.Option("--operator", help=f"act as this operator (token in ${TOKEN_VARIABLE})")
]
Name = Annotated[str, typer.Argument(help="the template's name")]
Number = Annotated[int, typer.Argument(help="the version number", min=1)]


@templates_cli.command("list")
def templates_list(operator: Operator) -> None:
    """Stored templates you may read, with their live and latest versions; then the file templates."""

    async def action(templates: Templates, _: KafkaPublisher, who: Principal) -> list[str]:
        apps = who.apps_for("templates:read")
        live = await templates.store.live()
        lines = []
        for template in await templates.store.all():
            if ALL_APPS in apps or template.app in apps:
                latest = len(await templates.store.versions(template.name))
                shown = live.get(template.name, "-")
                lines.append(f"{template.name:<28} app {template.app:<16} live {shown!s:<4} "
                             f"latest {latest:<4} {template.description}")
        files = [n for n in templates.catalog.names if templates.catalog.is_file(n)]
        return [*lines, f"files (edited in git): {', '.join(files) or 'none'}"]

    for line in _act(operator, action):
        typer.echo(line)


@templates_cli.command("show")
def templates_show(
    name: Name, operator: Operator,
    version: Annotated[int | None, typer.Option(help="show this version in full")] = None,
) -> None:
    """A template with its versions and their publications, or one version in full, as JSON."""

    async def action(templates: Templates, _: KafkaPublisher, who: Principal) -> dict[str, Any]:
        template = await _allowed(templates, who, name, "templates:read")
        if version is None:
            return await service.summary(templates, template)
        return (await service.version_of(templates, name, version)).model_dump(mode="json")

    typer.echo(json.dumps(_act(operator, action), indent=2, ensure_ascii=False))


@templates_cli.command("save")
def templates_save(
    file: Annotated[Path, typer.Argument(help="YAML or JSON: name, app, description, comment, variables, "
                                              "and one key per channel as in templates/*.yaml")],
    operator: Operator,
) -> None:
    """Save the file's content as the template's next version (the first creates it)."""
    raw = _read(file)
    name = str(raw.pop("name", "") or file.stem)
    try:
        draft = VersionDraft.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"]) or "file"
        raise SwitchboardError(f"{file}: {where}: {error['msg']}") from None

    async def action(templates: Templates, audit: KafkaPublisher, who: Principal) -> str:
        app = await service.owner_app(templates, name, draft)
        _check(who, "templates:edit", app)
        template, saved, created = await service.save(templates, who.name, name, draft)
        await audit.publish_audit(_record(who, "template.save", f"{name}@{saved.number}", app, saved.comment,
                                          after={"created": created, "version": saved.number}))
        made = f"a new template of app {template.app}" if created else "not live until published"
        return f"{name} version {saved.number} saved ({made})"

    typer.echo(_act(operator, action))


@templates_cli.command("preview")
def templates_preview(
    name: Name, version: Number, operator: Operator,
    data: Annotated[Path | None, typer.Option(help="a YAML or JSON file of variables (default: the samples)")]
    = None,
) -> None:
    """Each channel rendered: fields, SMS segments, estimated cost, problems found."""
    values = _read(data) if data is not None else None

    async def action(templates: Templates, _: KafkaPublisher, who: Principal) -> dict[str, Any]:
        await _allowed(templates, who, name, "templates:read")
        return await service.render_preview(templates, name, version, values)

    typer.echo(json.dumps(_act(operator, action), indent=2, ensure_ascii=False))


@templates_cli.command("diff")
def templates_diff(name: Name, old: Number, new: Number, operator: Operator) -> None:
    """Unified diff from version OLD to NEW, per channel part and of the variables."""

    async def action(templates: Templates, _: KafkaPublisher, who: Principal) -> dict[str, str]:
        await _allowed(templates, who, name, "templates:read")
        return await service.version_diff(templates, name, old, new)

    changes = _act(operator, action)
    typer.echo("".join(changes.values()).rstrip("\n") or f"versions {old} and {new} of {name} are the same")


@templates_cli.command("publish")
def templates_publish(name: Name, version: Number, operator: Operator) -> None:
    """Make a version live (an older one: a rollback), or ask for approval when a policy says so."""

    async def action(templates: Templates, audit: KafkaPublisher, who: Principal) -> str:
        template = await _allowed(templates, who, name, "templates:publish")
        before = await templates.store.live_number(name)
        publication = await service.publish(templates, who.name, name, version)
        await audit.publish_audit(_record(who, "template.publish", f"{name}@{version}", template.app,
                                          publication.reason, before={"live": before},
                                          after=publication.model_dump(mode="json")))
        if publication.state == "pending_approval":
            return (f"{name} version {version} waits for approval {publication.approval_id} "
                    f"({publication.reason}); version {before or '-'} stays live")
        return f"{name} version {version} is live (was {before or '-'}); workers take it within seconds"

    typer.echo(_act(operator, action))


def _read(file: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SwitchboardError(f"{file}: cannot read: {exc}") from None
    if not isinstance(raw, dict):
        raise SwitchboardError(f"{file}: expected a mapping of keys to values")
    return raw


def _check(who: Principal, permission: str, app: str) -> None:
    if not who.allows(permission, app):
        raise SwitchboardError(f"operator {who.name!r} lacks permission {permission} on app {app!r}")


async def _allowed(templates: Templates, who: Principal, name: str, permission: str) -> StoredTemplate:
    template = await service.template_of(templates, name)
    _check(who, permission, template.app)
    return template


def _record(who: Principal, action: str, target: str, app: str, reason: str, **change: Any) -> AuditRecord:
    return AuditRecord(actor=who.name, actor_kind=who.kind, source="cli", action=action,
                       target_kind="template", target=target, app=app, reason=reason[:1000],
                       before=change.get("before"), after=change.get("after"))


def _act(operator: str, action: Callable[[Templates, KafkaPublisher, Principal], Awaitable[_T]]) -> _T:
    """Run `action` as the operator whose token is in the environment, with the audit topic open."""
    from api.template_service import build_templates
    from channels.templates import TemplateCatalog

    async def with_templates(
        settings: Settings, redis: Redis, publisher: KafkaPublisher, who: Principal
    ) -> _T:
        templates = build_templates(settings, redis, TemplateCatalog(settings.templates))
        return await action(templates, publisher, who)

    return act_as_operator(operator, with_templates, (TemplateRefused,))

"""`switchboard campaigns list|show|create FILE|submit|cancel|recall|report`: the campaigns API's
operations from a shell on the server, each change an audit record on topic `audit` as done by the
shell's user from `cli` (the broker is checked before anything changes: api/access_cli.py)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from settings import Settings, SwitchboardError

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from api.access_cli import Shell
    from api.campaign_service import CampaignDesk
    from state.campaigns import Campaign

T = TypeVar("T")
campaigns_cli = typer.Typer(
    no_args_is_help=True, help="Campaigns: compose, submit, cancel, recall; their progress and reach."
)
_Id = Annotated[str, typer.Argument(help="the campaign's id (`<app>.c<hex>`, as `list` shows)")]


@campaigns_cli.command("create")
def campaigns_create(
    file: Annotated[Path, typer.Argument(help="a JSON or YAML composition, the body of POST /v1/campaigns")],
) -> None:
    """Compose a draft from a file; prints its id, recipients and estimated cost."""
    from api.audit_cli import cli_actor
    from api.campaign_service import estimate
    from state.campaigns import Campaign, new_campaign_id

    composition = _composition(file)

    async def action(desk: CampaignDesk, shell: Shell) -> str:
        app = await shell.apps.get(composition.app)
        if app is None:
            raise SwitchboardError(f"{file}: app: no app named {composition.app!r} is registered")
        campaign_id = new_campaign_id(composition.app)
        _check_content(desk, composition.event(campaign_id, ""), file)
        campaign = Campaign(
            id=campaign_id, app=composition.app, name=composition.name, composition=composition,
            created_by=cli_actor(), created_at=datetime.now(UTC),
        )
        await desk.store.create(campaign)
        await shell.audit("campaign.create", "campaign", campaign.id, app=campaign.app,
                          after=campaign.model_dump(mode="json"))
        cost = await estimate(desk, composition, app.channels)
        recipients = _recipients(cost.recipients, cost.exact)
        return f"{campaign.id} draft: {recipients}, estimated cost {_cost(cost.cost)}"

    typer.echo(_changing(action))


@campaigns_cli.command("list")
def campaigns_list(app: Annotated[str | None, typer.Option(help="only this app's")] = None) -> None:
    """Every campaign, newest first: state, recipients, and sent/delivered/read/failed/cancelled so far."""

    async def action(desk: CampaignDesk, _: Redis) -> list[str]:
        campaigns = await desk.store.listing(None if app is None else {app})
        progress = _progress(campaigns)
        return [_line(c, progress) for c in campaigns]

    lines = _reading(action)
    if not lines:
        typer.echo("no campaigns; compose one with `switchboard campaigns create FILE`")
    for line in lines:
        typer.echo(line)


@campaigns_cli.command("show")
def campaigns_show(campaign_id: _Id) -> None:
    """One campaign: its composition, state, recipients, estimated cost and progress."""
    from api.campaign_service import estimate
    from state.apps import AppRegistry

    async def action(desk: CampaignDesk, redis: Redis) -> dict[str, Any]:
        campaign = await _found(desk, campaign_id)
        app = await AppRegistry(redis).get(campaign.app)
        cost = await estimate(desk, campaign.composition, app.channels if app else frozenset())
        progress = _progress([campaign])
        return campaign.model_dump(mode="json") | {
            "event_id": campaign.event_id,
            "estimate": cost.as_dict(),
            "progress": None if progress is None else progress.get(campaign.id, {}),
        }

    typer.echo(json.dumps(_reading(action), ensure_ascii=False, indent=2))


@campaigns_cli.command("submit")
def campaigns_submit(campaign_id: _Id) -> None:
    """Send a draft: publish its one event (signed with its app's key); approval policies apply to it."""
    from api.audit_cli import cli_actor
    from api.campaign_service import CampaignStateError, submitted
    from records.signing import signature
    from records.topics import lane_of

    async def action(desk: CampaignDesk, shell: Shell) -> str:
        before = await _found(desk, campaign_id)
        event = before.event(cli_actor())
        if before.state != "draft":
            raise CampaignStateError(f"campaign {before.id!r} is {before.state}, not a draft")
        _check_content(desk, event, None)
        key = await shell.apps.signing_key(event.app)
        record = event.model_dump_json().encode()
        signed = signature(record, key) if key else ""

        async def publish() -> None:
            key = f"{event.app}:{event.event_id}"
            await shell.publisher.publish_event(key, record, lane_of(event), signed)

        after = await submitted(desk.store, before, cli_actor(), publish)
        await shell.audit("campaign.submit", "campaign", after.id, app=after.app,
                          before=before.model_dump(mode="json"), after=after.model_dump(mode="json"))
        return f"{after.id} {after.state}: event {after.event_id} published"

    typer.echo(_changing(action))


@campaigns_cli.command("cancel")
def campaigns_cancel(campaign_id: _Id) -> None:
    """Stop a scheduled or running campaign: what is not sent yet is not sent (a `cancelled` row each)."""
    from api.audit_cli import cli_actor
    from api.campaign_service import mark_cancelled

    async def action(desk: CampaignDesk, shell: Shell) -> str:
        before = await _found(desk, campaign_id)
        after = await mark_cancelled(desk.store, before, cli_actor())
        reason = after.cancelled.reason if after.cancelled else ""
        await shell.audit("campaign.cancel", "campaign", after.id, app=after.app, reason=reason,
                          before=before.model_dump(mode="json"), after=after.model_dump(mode="json"))
        return f"{after.id} cancelled: {reason}"

    typer.echo(_changing(action))


@campaigns_cli.command("recall")
def campaigns_recall(campaign_id: _Id) -> None:
    """Take the campaign's inbox messages back (撤回); other channels cannot be recalled."""
    from api.audit_cli import cli_actor
    from api.campaign_service import recall

    async def action(desk: CampaignDesk, shell: Shell) -> str:
        before = await _found(desk, campaign_id)
        done = await recall(desk, before, cli_actor(), shell.publisher.publish_receipt)
        if done.cancelled is not None:
            await shell.audit("campaign.cancel", "campaign", before.id, app=before.app,
                              reason="cancelled by its recall", before=before.model_dump(mode="json"),
                              after=done.cancelled.model_dump(mode="json"))
        await shell.audit("campaign.recall", "campaign", before.id, app=before.app,
                          reason=f"{done.count} inbox messages recalled",
                          after=done.campaign.model_dump(mode="json"))
        stopped = " (it was still sending: cancelled first)" if done.cancelled is not None else ""
        return f"{done.campaign.id}: {done.count} inbox messages recalled{stopped}"

    typer.echo(_changing(action))


@campaigns_cli.command("report")
def campaigns_report(
    campaign_id: _Id,
    as_json: Annotated[bool, typer.Option("--json", help="the report as JSON")] = False,
) -> None:
    """Reach and conversion per channel, from ClickHouse."""
    from analytics.campaign_report import campaign_report
    from analytics.connection import open_reader

    async def action(desk: CampaignDesk, _: Redis) -> Campaign:
        return await _found(desk, campaign_id)

    campaign = _reading(action)
    client = open_reader(Settings())
    try:
        report = campaign_report(client, campaign.app, campaign.id, campaign.created_at).as_dict()
    finally:
        client.close()
    if as_json:
        typer.echo(json.dumps({"campaign": campaign.id, **report}, ensure_ascii=False, indent=2))
        return
    typer.echo(f"{campaign.id} {campaign.name}: reach {report['reach']}, read rate {report['read_rate']}, "
               f"conversion rate {report['conversion_rate']}, cost {report['cost']}")
    for line in report["channels"]:
        counts = ", ".join(f"{status} {n}" for status, n in sorted(line["statuses"].items()))
        typer.echo(f"  {line['channel']:<10} {counts}")


def _composition(file: Path) -> Any:
    """The file's composition, or one line naming the file and the field that is wrong."""
    import yaml
    from pydantic import ValidationError

    from state.campaigns import Composition

    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))  # JSON is YAML too
    except (OSError, yaml.YAMLError) as exc:
        raise SwitchboardError(f"{file}: cannot read it: {exc}") from None
    try:
        return Composition.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"]) or "composition"
        message = str(error["msg"]).removeprefix("Value error, ")
        raise SwitchboardError(f"{file}: {where}: {message}") from None


def _check_content(desk: CampaignDesk, event: Any, file: Path | None) -> None:
    """What the API refuses at compose and submit: an unknown template, a missing variable."""
    where = f"{file}: " if file else ""
    if desk.templates is None:
        return
    if event.template not in desk.templates:
        raise SwitchboardError(f"{where}template: unknown template {event.template!r}")
    problems = desk.templates.check_data(event.template, event.data)
    if problems:
        raise SwitchboardError(f"{where}data: " + "; ".join(problems))


async def _found(desk: CampaignDesk, campaign_id: str) -> Campaign:
    campaign = await desk.store.get(campaign_id)
    if campaign is None:
        raise SwitchboardError(f"no campaign {campaign_id!r}; `switchboard campaigns list` shows them")
    return campaign


def _progress(campaigns: list[Campaign]) -> dict[str, dict[str, int]] | None:
    """Progress from ClickHouse; None (and the list without it) when the analytics cannot be read."""
    from analytics.campaign_report import campaign_progress
    from analytics.connection import open_reader

    submitted = [c for c in campaigns if c.submitted_at is not None]
    if not submitted:
        return {}
    try:
        client = open_reader(Settings())
    except Exception:  # the list is still worth showing without the analytics
        return None
    try:
        since = min(c.created_at for c in submitted)
        return campaign_progress(client, [(c.app, c.id) for c in submitted], since)
    finally:
        client.close()


def _line(campaign: Campaign, progress: dict[str, dict[str, int]] | None) -> str:
    counts = (progress or {}).get(campaign.id)
    shown = "-" if counts is None else " ".join(f"{k} {v}" for k, v in counts.items() if k != "settled")
    return f"{campaign.id:<28} {campaign.state:<10} {campaign.name[:30]:<30} {shown}"


def _recipients(count: int | None, exact: bool) -> str:
    if count is None:
        return "recipients counted when sent"
    return f"{count} recipients" if exact else f"at most {count} recipients"


def _cost(cost: float | None) -> str:
    return "unknown until sent" if cost is None else f"{cost:g}"


def _desk(settings: Settings, redis: Redis) -> CampaignDesk:
    from api.campaign_service import campaign_desk
    from channels.templates import TemplateCatalog

    return campaign_desk(settings, redis, TemplateCatalog(settings.templates))


def _changing(action: Callable[[CampaignDesk, Shell], Awaitable[T]]) -> T:
    """Run a change with Redis and the audit topic open; a broker that is down changes nothing."""
    from api.access_cli import audited_shell
    from state.connection import open_redis

    async def run() -> T:
        settings = Settings()
        async with audited_shell(settings) as shell:
            redis = open_redis(settings.redis)
            try:
                return await action(_desk(settings, redis), shell)
            finally:
                await redis.aclose()

    return asyncio.run(run())


def _reading(action: Callable[[CampaignDesk, Redis], Awaitable[T]]) -> T:
    from state.connection import open_redis

    async def run() -> T:
        settings = Settings()
        redis = open_redis(settings.redis)
        try:
            return await action(_desk(settings, redis), redis)
        finally:
            await redis.aclose()

    return asyncio.run(run())

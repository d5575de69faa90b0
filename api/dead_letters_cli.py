"""`switchboard dead-letters list | show | replay`: the dead-letter topic for the person on the server.

The command line acts with a shell's powers (every app), as `cli:<os user>`; each replay is audited
like the API's (`dead_letter.replay`), and a replay is refused before anything is published when the
broker does not answer.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from settings import Settings, SwitchboardError

if TYPE_CHECKING:
    from processors.dead_letter_shelf import DeadLetterShelf, LetterFilter

dead_letters_cli = typer.Typer(
    no_args_is_help=True, help="List, inspect and replay dead-lettered events (topic events.deadletter)."
)

_Reason = Annotated[str | None, typer.Option(help="letters whose reason contains this text (any case)")]
_App = Annotated[str | None, typer.Option(help="one app's letters")]
_Stage = Annotated[str | None, typer.Option(help="the stage that refused: ingest, decide, send, track")]
_Since = Annotated[str | None, typer.Option(help="refused since: 30m, 12h, 1d, 2w, a date or an ISO time")]


def shelf(settings: Settings) -> DeadLetterShelf:
    from api.publisher import bootstrap_servers
    from processors.dead_letter_shelf import DeadLetterShelf

    return DeadLetterShelf(
        bootstrap_servers(settings.kafka), settings.topic("events.deadletter"), settings.topic_prefix
    )


def letter_filter(reason: str | None, app: str | None, stage: str | None, since: str | None) -> LetterFilter:
    from analytics.funnel import parse_moment
    from processors.dead_letter_shelf import STAGES, LetterFilter

    stages = sorted({*STAGES.values(), "other"})
    if stage is not None and stage not in stages:
        raise SwitchboardError(f"--stage {stage!r}: choose {', '.join(stages)}")
    start = parse_moment(since, datetime.now(UTC)) if since else None
    return LetterFilter(reason=reason or None, app=app or None, stage=stage, since=start)


def _run(work: Any) -> Any:
    from api.audit_cli import quiet_kafka_client
    from processors.dead_letter_shelf import ShelfUnavailable

    quiet_kafka_client()
    try:
        return asyncio.run(work)
    except ShelfUnavailable as exc:
        raise SwitchboardError(f"{exc}; start the broker (`switchboard parts up`)") from None


@dead_letters_cli.command("list")
def list_letters(
    reason: _Reason = None,
    app: _App = None,
    stage: _Stage = None,
    since: _Since = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="how many, newest first")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per letter and line")] = False,
) -> None:
    """Dead letters, newest first: id, when, stage, app, event id and reason (not the payload)."""
    from api.dead_letter_replay import summary

    wanted = letter_filter(reason, app, stage, since)
    letters = _run(shelf(Settings()).letters(wanted))
    if not letters and not as_json:
        typer.echo("no dead letters match")
    for shelved in letters[:limit]:
        shown = summary(shelved)
        if as_json:
            typer.echo(json.dumps(shown, ensure_ascii=False))
            continue
        typer.echo(
            f"{shown['id']:<10} {shown['received_at'][:19]} {shown['stage']:<7} {shown['app'] or '-':<12} "
            f"{shown['event_id'] or '-':<20} {shown['reason'][:200]}"
        )
    if len(letters) > limit:
        typer.echo(f"... {len(letters) - limit} more; narrow with --reason/--app/--stage/--since", err=True)


@dead_letters_cli.command("show")
def show(letter_id: Annotated[str, typer.Argument(help="the letter's id, PARTITION-OFFSET")]) -> None:
    """One letter with its payload decoded (secret-named fields masked), as JSON."""
    from api.audit_cli import audited
    from api.dead_letter_replay import inspected

    # A payload is a person's data: who read which letter is audited, or it is not shown.
    _letter_id(letter_id)  # a mistyped id is named before the broker is asked anything
    settings = Settings()
    shelved = audited(
        "dead_letter.read",
        letter_id,
        lambda: _run(_one(settings, letter_id)),
        target_kind="dead_letter",
        settings=settings,
        outcome_of=lambda found: {"app": found.letter.app},
    )
    typer.echo(json.dumps(inspected(shelved), ensure_ascii=False, indent=2))


def _letter_id(letter_id: str) -> None:
    from processors.dead_letter_shelf import parse_letter_id

    try:
        parse_letter_id(letter_id)
    except ValueError as exc:
        raise SwitchboardError(str(exc)) from None


async def _one(settings: Settings, letter_id: str) -> Any:
    _letter_id(letter_id)
    shelved = await shelf(settings).get(letter_id)
    if shelved is None:
        raise SwitchboardError(
            f"no dead letter {letter_id} on {settings.topic('events.deadletter')} (any more)"
        )
    return shelved


@dead_letters_cli.command("replay")
def replay(
    letter_ids: Annotated[
        list[str] | None, typer.Argument(help="letter ids; or select with the options")
    ] = None,
    event: Annotated[
        Path | None, typer.Option(help="a JSON file with the corrected event (one letter id only)")
    ] = None,
    reason: _Reason = None,
    app: _App = None,
    stage: _Stage = None,
    since: _Since = None,
) -> None:
    """Publish letters' events to `events` again (after a fix); ingest drops a duplicate app+event_id."""
    settings = Settings()
    edited = _edited(event, letter_ids)
    selecting = any(value is not None for value in (reason, app, stage, since))
    if bool(letter_ids) == selecting:
        raise SwitchboardError(
            "replay: give letter ids, or select letters with --reason/--app/--stage/--since"
        )
    results = _run(_replay(settings, letter_ids or [], letter_filter(reason, app, stage, since), edited))
    for result in results:
        typer.echo(f"{result.letter_id:<10} {result.outcome:<15} {result.app or '-':<12} {result.detail}")
    if any(result.outcome != "published" for result in results):
        raise typer.Exit(1)


def _edited(event: Path | None, letter_ids: list[str] | None) -> dict[str, Any] | None:
    if event is None:
        return None
    if len(letter_ids or []) != 1:
        raise SwitchboardError("--event corrects one letter: give exactly one letter id with it")
    try:
        value = json.loads(event.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SwitchboardError(f"{event}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise SwitchboardError(f"{event}: not a JSON event ({exc})") from None
    if not isinstance(value, dict):
        raise SwitchboardError(f"{event}: the event must be a JSON object")
    return value


async def _replay(
    settings: Settings, letter_ids: list[str], wanted: LetterFilter, edited: dict[str, Any] | None
) -> list[Any]:
    from api.audit_cli import SOURCE, audit_publisher, cli_actor
    from api.dead_letter_replay import Actor, Signing, replay
    from api.publisher import PublishError
    from processors.dead_letter_shelf import REPLAYABLE_STAGE
    from state.apps import AppRegistry
    from state.connection import open_redis
    from state.dedup import EventDedup

    letters = (
        [await _one(settings, letter_id) for letter_id in letter_ids]
        if letter_ids
        else [s for s in await shelf(settings).letters(wanted) if s.stage == REPLAYABLE_STAGE]
    )
    if not letters:
        raise SwitchboardError("no dead-lettered events match")
    publisher = audit_publisher(settings)
    redis = open_redis(settings.redis)
    try:
        try:
            await publisher.start()
            await publisher.check()
        except PublishError as exc:
            raise SwitchboardError(f"cannot replay: {exc}; nothing was published") from None
        actor = Actor(cli_actor(), "operator", SOURCE)
        dedup = EventDedup(redis, settings.dedup_ttl_seconds)
        signing = Signing(AppRegistry(redis), settings.events_signatures == "required")
        results = []
        for shelved in letters:
            try:
                results.append(
                    await replay(
                        shelved,
                        publisher=publisher,
                        accepted=dedup,
                        actor=actor,
                        may_replay=lambda _: True,
                        edited=edited,
                        signing=signing,
                    )
                )
            except PublishError as exc:
                before = ", ".join(r.letter_id for r in results if r.outcome == "published") or "none"
                raise SwitchboardError(f"{exc}; published before it: {before}") from None
        return results
    finally:
        await publisher.stop()
        await redis.aclose()

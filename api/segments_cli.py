"""`switchboard segments list|show|add|remove|preview`: the segments API's operations from a shell on the
server, each change an audit record on topic `audit` as done by the shell's user from `cli` (the broker
is checked before anything changes, as for `switchboard budgets`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from settings import Settings, SwitchboardError

if TYPE_CHECKING:
    from api.access_cli import Shell
    from state.segment_definitions import Definition
    from state.segments import SegmentStore, StoredSegment

T = TypeVar("T")
segments_cli = typer.Typer(
    no_args_is_help=True, help="Named segments evaluated at send: define, count, sample."
)

_Name = Annotated[str, typer.Argument(help="the segment's name")]


@segments_cli.command("list")
def segments_list(app: Annotated[str | None, typer.Option(help="only this app's (or `*`)")] = None) -> None:
    """Every defined segment: name, app, description."""
    found = _with_segments(lambda segments: segments.all())
    chosen = [s for s in found if app is None or s.app == app]
    if not chosen:
        typer.echo("no segments; define one with `switchboard segments add NAME FILE --app APP`")
    for segment in chosen:
        typer.echo(f"{segment.name:<32} {segment.app:<16} {segment.description}")


@segments_cli.command("show")
def segments_show(name: _Name) -> None:
    """One segment: its definition (as JSON) and who wrote it when."""
    segment = _with_segments(lambda segments: _found(segments, name))
    typer.echo(json.dumps(segment.model_dump(mode="json"), ensure_ascii=False, indent=2))


@segments_cli.command("add")
def segments_add(
    name: _Name,
    file: Annotated[Path, typer.Argument(help="the definition: a YAML or JSON file of one root condition")],
    app: Annotated[str, typer.Option(help="the owner app, or `*` for every app")],
    description: Annotated[str, typer.Option(help="what the segment is for")] = "",
) -> None:
    """Create or replace a segment from a definition file (checked first; nothing changes if it is bad)."""
    definition = _read_definition(file)

    async def action(segments: SegmentStore, shell: Shell) -> tuple[StoredSegment | None, StoredSegment]:
        from api.audit_cli import cli_actor

        before, after = await segments.put(name, app, description, definition, cli_actor())
        await _audit(shell, "segment.put", after, before, after)
        return before, after

    before, _ = _changing(action)
    typer.echo(f"segment {name} {'replaced' if before else 'created'} (app {app})")


@segments_cli.command("remove")
def segments_remove(name: _Name) -> None:
    """Remove a segment's definition (events naming it are dead-lettered from then on)."""

    async def action(segments: SegmentStore, shell: Shell) -> StoredSegment:
        segment = await _found(segments, name)
        await segments.remove(name)
        await _audit(shell, "segment.remove", segment, segment, None)
        return segment

    _changing(action)
    typer.echo(f"segment {name} removed")


@segments_cli.command("preview")
def segments_preview(
    name: Annotated[str | None, typer.Argument(help="a defined segment (or give --file)")] = None,
    file: Annotated[Path | None, typer.Option(help="an unsaved definition to preview instead")] = None,
    sample: Annotated[int, typer.Option(min=0, max=100, help="how many members to show")] = 10,
) -> None:
    """The exact count (a full evaluation), how long it took, and a sample of members with their names."""
    if (name is None) == (file is None):
        raise SwitchboardError("give a segment name or --file with a definition, not both")
    draft = _read_definition(file) if file is not None else None

    async def action(segments: SegmentStore) -> Any:
        from state.segments import SegmentAudience

        condition = draft.root if draft is not None else (await _found(segments, name or "")).condition
        audience = SegmentAudience(name or "draft", await segments.evaluator.narrowest(condition), condition)
        return audience, await segments.evaluator.preview(audience, sample)

    audience, preview = _with_segments(action)
    typer.echo(f"{preview.count} people (read {preview.scanned} from {', '.join(audience.index.sets)} "
               f"in {preview.seconds:.3f} s)")
    for user_id, person in preview.sample:
        typer.echo(f"  {user_id:<32} {person}")


def _read_definition(file: Path) -> Definition:
    """The definition in `file`, or one line naming what is wrong and where."""
    import yaml

    from state.segment_definitions import DefinitionError, parse_definition

    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise SwitchboardError(f"{file}: cannot read it ({exc.strerror})") from None
    try:
        raw = json.loads(text) if file.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise SwitchboardError(f"{file}: not valid {'JSON' if file.suffix == '.json' else 'YAML'}: "
                               f"{str(exc).splitlines()[0]}") from None
    try:
        return parse_definition(raw)
    except DefinitionError as exc:
        raise SwitchboardError(f"{file}: {exc}") from None


async def _found(segments: SegmentStore, name: str) -> StoredSegment:
    segment = await segments.get(name)
    if segment is None:
        raise SwitchboardError(f"no segment {name!r}; `switchboard segments list` shows them")
    return segment


async def _audit(shell: Shell, action: str, segment: StoredSegment, before: Any, after: Any) -> None:
    await shell.audit(
        action, "segment", segment.name, app=segment.app,
        before=before.model_dump(mode="json") if before else None,
        after=after.model_dump(mode="json") if after else None,
    )


def _changing(action: Callable[[SegmentStore, Shell], Awaitable[T]]) -> T:
    """Run a change with Redis and the audit topic open; a broker that is down changes nothing."""
    from api.access_cli import audited_shell
    from state.connection import open_redis
    from state.segments import SegmentStore

    async def run() -> T:
        settings = Settings()
        async with audited_shell(settings) as shell:
            redis = open_redis(settings.redis)
            try:
                return await action(SegmentStore(redis), shell)
            finally:
                await redis.aclose()

    return asyncio.run(run())


def _with_segments(action: Callable[[SegmentStore], Awaitable[T]]) -> T:
    from state.connection import open_redis
    from state.segments import SegmentStore

    async def run() -> T:
        redis = open_redis(Settings().redis)
        try:
            return await action(SegmentStore(redis))
        finally:
            await redis.aclose()

    return asyncio.run(run())

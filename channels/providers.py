"""The providers file: per channel, its providers with priority, rate limit, cost and adapter options.

```yaml
sms:
  - name: aliyun-main            # unique in the file; callbacks and receipts name the provider by it
    kind: aliyun                 # see channels.kinds.KINDS
    priority: 1                  # lowest first
    rate: {per_second: 100, burst: 200}
    cost_per_message: 0.045      # used when the adapter reports no cost
    options: {access_key_secret: "${ALIYUN_SECRET}", ...}   # checked by the adapter's options_model
```

Secrets are never written in the file: `${NAME}` (or a whole value `env:NAME`) is read from the
environment at load, `${NAME:-default}` falls back to a default (for local demo values only); inside
`{...}` quote it (`"${NAME}"`), as YAML reads a bare `{` there as a mapping. Every error is reported at
once as `path:line:col: message`, and never shows a value read from the environment.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from channels.base import Channel, ChannelDeps, ProviderOptions
from channels.failover import Rate
from channels.kinds import KINDS, KindUnavailable, adapter_for
from records.topics import ChannelName
from settings.yaml_files import FileProblems, LocatedProblem, duplicate_keys

ProviderName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.\-]*$")
]
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_WHOLE_ENV = re.compile(r"^env:([A-Za-z_][A-Za-z0-9_]*)$")
_MASK = "**********"  # as pydantic shows a SecretStr


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RateLimit(_Strict):
    """Sustained sends per second, and how many may go at once after a quiet spell."""

    per_second: float = Field(gt=0)
    burst: float = Field(ge=1)


class ProviderEntry(_Strict):
    """One provider as written in the file; `options` are checked later by the kind's adapter."""

    name: ProviderName
    kind: str
    priority: int = Field(0, ge=0)
    enabled: bool = True
    rate: RateLimit | None = None
    cost_per_message: float | None = Field(None, ge=0)
    options: dict[str, Any] = Field(default_factory=dict)


class ProvidersFile(_Strict):
    """The file's schema: a list of providers per channel that has configurable providers."""

    sms: list[ProviderEntry] = Field(default_factory=list)
    push: list[ProviderEntry] = Field(default_factory=list)
    wechat_oa: list[ProviderEntry] = Field(default_factory=list)
    wechat_mp: list[ProviderEntry] = Field(default_factory=list)
    robot: list[ProviderEntry] = Field(default_factory=list)


@dataclass(frozen=True)
class ProviderSpec:
    """A provider ready to build: validated options (secrets as SecretStr) and its adapter class."""

    channel: ChannelName
    name: str
    kind: str
    priority: int
    rate: Rate | None
    cost_per_message: float | None
    options: ProviderOptions
    adapter: type[Channel]
    from_env: frozenset[str] = frozenset()
    """Options written as environment references: masked when printed, whatever their type."""

    def build(self, deps: ChannelDeps) -> Channel:
        return self.adapter.from_options(self.options, deps)

    def masked(self) -> dict[str, Any]:
        """This provider for printing: secrets shown as stars."""
        rate = {"per_second": self.rate.per_second, "burst": self.rate.burst} if self.rate else None
        return {
            "channel": self.channel, "name": self.name, "kind": self.kind, "priority": self.priority,
            "rate": rate, "cost_per_message": self.cost_per_message,
            # JSON mode turns every SecretStr into stars.
            "options": {
                key: _MASK if key in self.from_env else value
                for key, value in self.options.model_dump(mode="json").items()
            },
        }


class ProviderError(LocatedProblem):
    """One problem in the providers file, at a 1-based line and column."""


class ProvidersFileError(FileProblems):
    """A providers file that cannot be loaded; `errors` holds every problem found."""


def load_providers(
    path: str | Path,
    environ: Mapping[str, str] | None = None,
    *,
    skip_unavailable: Callable[[str], None] | None = None,
    require_env: bool = True,
) -> list[ProviderSpec]:
    """Every enabled provider in the file; raise ProvidersFileError listing every problem.

    With `skip_unavailable`, a provider whose adapter module is not installed is left out and the
    callable told why; `require_env=False` checks the file without its secrets.
    """
    specs, errors = _Loader(Path(path), os.environ if environ is None else environ,
                            skip_unavailable, require_env).load()
    if errors:
        raise ProvidersFileError(errors)
    return specs


def check_providers(path: str | Path, environ: Mapping[str, str] | None = None,
                    *, require_env: bool = True) -> list[ProviderError]:
    """Every problem in the providers file (empty when it loads)."""
    loader = _Loader(Path(path), os.environ if environ is None else environ, None, require_env)
    return loader.load()[1]


class _Loader:
    def __init__(self, path: Path, environ: Mapping[str, str],
                 skip_unavailable: Callable[[str], None] | None, require_env: bool) -> None:
        self.file = str(path)
        self.path = path
        self.environ = environ
        self.skip_unavailable = skip_unavailable
        self.require_env = require_env
        self.errors: list[ProviderError] = []
        self.secrets: set[str] = set()

    def load(self) -> tuple[list[ProviderSpec], list[ProviderError]]:
        root, data = self._parse()
        if root is None:
            return [], self.errors
        resolved = self._resolve_file(root, {} if data is None else data)
        try:
            ProvidersFile.model_validate(resolved)
        except ValidationError as exc:
            for err in exc.errors():
                self._error(root, tuple(err["loc"]), _message(err, _allowed(tuple(err["loc"]))),
                            key=err["type"] == "extra_forbidden", parent=err["type"] == "missing")
        specs: list[ProviderSpec] = []
        first: dict[str, tuple[str | int, ...]] = {}
        for channel, index, entry in _entries(resolved):
            loc: tuple[str | int, ...] = (channel, index)
            earlier = first.setdefault(entry.name, loc)
            if earlier != loc:
                line = _node_at(root, earlier).start_mark.line + 1
                self._error(root, (*loc, "name"), f"duplicate provider name {entry.name!r} "
                            f"(first at line {line})")
                continue
            spec = self._spec(root, channel, loc, entry, data[channel][index].get("options") or {})
            if spec is not None:
                specs.append(spec)
        errors = sorted(
            (ProviderError(e.file, e.line, e.column, self._redact(e.message)) for e in self.errors),
            key=lambda e: (e.line, e.column),
        )
        return (specs, []) if not errors else ([], errors)

    def _parse(self) -> tuple[yaml.Node | None, Any]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            self.errors.append(ProviderError(self.file, 1, 1, f"cannot read providers file: {exc}"))
            return None, None
        loader = yaml.SafeLoader(text)
        try:
            root = loader.get_single_node()
            data = loader.construct_document(root) if root is not None else None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
            detail = " ".join(part for part in (exc.context, exc.problem) if part)
            self.errors.append(ProviderError(self.file, line, column, f"invalid YAML: {detail}"))
            return None, None
        finally:
            loader.dispose()
        if root is None:
            return yaml.MappingNode("tag:yaml.org,2002:map", []), None  # empty file: no providers
        for key in duplicate_keys(root):
            self._error(key, (), f"duplicate key {key.value!r}")
        return (None, None) if self.errors else (root, data)

    def _spec(self, root: yaml.Node, channel: str, loc: tuple[str | int, ...],
              entry: ProviderEntry, raw_options: dict[str, Any]) -> ProviderSpec | None:
        try:
            adapter = adapter_for(entry.kind)
        except KindUnavailable as exc:
            if entry.kind in KINDS and self.skip_unavailable is not None:
                self.skip_unavailable(f"provider {entry.name!r} left out: {exc}")
                return None
            self._error(root, (*loc, "kind"), str(exc) + _suggest(entry.kind, tuple(KINDS)))
            return None
        if adapter.channel != channel:
            self._error(root, (*loc, "kind"),
                        f"kind {entry.kind!r} is a {adapter.channel} provider, not {channel}")
            return None
        if not entry.enabled:
            return None  # checked up to its kind; its options may name variables that are not set
        try:
            validated = adapter.options_model.model_validate(entry.options)
        except ValidationError as exc:
            allowed = tuple(adapter.options_model.model_fields)
            for err in exc.errors():
                at = tuple(err["loc"])
                message = _message(err, allowed if len(at) == 1 else (), noun="option", secret_safe=True)
                self._error(root, (*loc, "options", *at), f"provider {entry.name!r}: {message}",
                            key=err["type"] == "extra_forbidden", parent=err["type"] == "missing")
            return None
        rate = Rate(entry.rate.per_second, entry.rate.burst) if entry.rate else None
        from_env = frozenset(k for k, v in entry.options.items() if raw_options.get(k) != v)
        return ProviderSpec(adapter.channel, entry.name, entry.kind, entry.priority, rate,
                            entry.cost_per_message, validated, adapter, from_env)

    def _resolve_file(self, root: yaml.Node, data: Any) -> Any:
        """The file's data with environment references replaced in every provider entry."""
        if not isinstance(data, dict):
            return data
        resolved: dict[Any, Any] = dict(data)
        for channel, entries in data.items():
            if not isinstance(entries, list):
                continue
            resolved[channel] = [
                self._resolve_entry(root, (channel, i), entry) for i, entry in enumerate(entries)
            ]
        return resolved

    def _resolve_entry(self, root: yaml.Node, loc: tuple[str | int, ...], entry: Any) -> Any:
        name = _entry_name(entry, int(loc[-1]))
        if not isinstance(entry, dict):
            return entry
        enabled = self._resolve(root, (*loc, "enabled"), name, entry.get("enabled", True))
        if _is_false(enabled):
            # A disabled provider is not built: its secrets need not be set (e.g. demo peers not started).
            strict, self.require_env = self.require_env, False
            try:
                return {**self._resolve(root, loc, name, entry), "enabled": enabled}
            finally:
                self.require_env = strict
        return {**self._resolve(root, loc, name, entry), "enabled": enabled}

    def _resolve(self, root: yaml.Node, loc: tuple[str | int, ...], name: str, value: Any) -> Any:
        """`value` with environment references replaced; a missing variable is an error here."""
        if isinstance(value, dict):
            return {k: self._resolve(root, (*loc, k), name, v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._resolve(root, (*loc, i), name, v) for i, v in enumerate(value)]
        if not isinstance(value, str):
            return value
        whole = _WHOLE_ENV.match(value)
        if whole:
            return self._variable(root, loc, name, whole.group(1), None)
        return _REFERENCE.sub(lambda m: self._variable(root, loc, name, m.group(1), m.group(2)), value)

    def _variable(self, root: yaml.Node, loc: tuple[str | int, ...], name: str, variable: str,
                  default: str | None) -> str:
        value = self.environ.get(variable, default)
        if value is None:
            if self.require_env:
                option = next((str(p) for p in reversed(loc) if isinstance(p, str)), "")
                self._error(root, loc, f"provider {name!r} {_noun(loc)} {option!r}: environment "
                            f"variable {variable} is not set")
            return f"unset-{variable}"
        if variable in self.environ and len(value) >= 4:
            self.secrets.add(value)
        return value

    def _error(self, root: yaml.Node, loc: tuple[str | int, ...], message: str,
               *, key: bool = False, parent: bool = False) -> None:
        node = _node_at(root, loc[:-1] if parent else loc, key=key)
        mark = node.start_mark
        self.errors.append(ProviderError(self.file, mark.line + 1, mark.column + 1, message))

    def _redact(self, message: str) -> str:
        for secret in sorted(self.secrets, key=len, reverse=True):
            message = message.replace(secret, _MASK)
        return message


def _is_false(value: Any) -> bool:
    return value is False or (isinstance(value, str) and value.strip().lower() in ("false", "0", "no", "off"))


def _entries(resolved: Any) -> Iterator[tuple[str, int, ProviderEntry]]:
    """The entries that pass the schema (the others are reported already), in file order."""
    if not isinstance(resolved, dict):
        return
    for channel in ProvidersFile.model_fields:
        entries = resolved.get(channel)
        for index, item in enumerate(entries if isinstance(entries, list) else []):
            try:
                yield channel, index, ProviderEntry.model_validate(item)
            except ValidationError:
                continue


def _noun(loc: tuple[str | int, ...]) -> str:
    return "option" if "options" in loc else "field"


def _entry_name(entry: Any, index: int) -> str:
    name = entry.get("name") if isinstance(entry, dict) else None
    return str(name) if isinstance(name, str) else f"#{index + 1}"


def _message(err: Mapping[str, Any], allowed: Sequence[str], *, noun: str = "field",
             secret_safe: bool = False) -> str:
    """A pydantic error in words; with `secret_safe`, never quoting the value that was given."""
    loc: tuple[str | int, ...] = tuple(err["loc"])
    kind = err["type"]
    field = next((str(p) for p in reversed(loc) if isinstance(p, str)), "")
    if kind == "extra_forbidden":
        return f"unknown {noun} {loc[-1]!r}" + _suggest(str(loc[-1]), allowed)
    if kind == "missing":
        return f"missing required {noun} {loc[-1]!r}"
    if kind == "string_pattern_mismatch" and field == "name" and not secret_safe:
        return f"provider name {err.get('input')!r} may only hold lowercase letters, digits and _ . -"
    if kind == "string_type" and not secret_safe:
        return f"'{field}' must be text, got {err.get('input')!r}: put the value in quotes"
    if kind in ("model_type", "dict_type"):
        return f"'{field or 'the file'}' must be a mapping of keys to values"
    if kind == "list_type":
        return f"'{field}' must be a list of providers"
    text = str(err["msg"]).removeprefix("Value error, ")
    return f"{noun} '{field}': {text}" if field else text


def _allowed(loc: tuple[str | int, ...]) -> tuple[str, ...]:
    names = [p for p in loc[:-1] if isinstance(p, str)]
    if not names:
        return tuple(ProvidersFile.model_fields)
    if names[-1] == "rate":
        return tuple(RateLimit.model_fields)
    return tuple(ProviderEntry.model_fields)


def _suggest(word: str, known: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, known, n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (expected one of: {', '.join(known)})" if known else ""


def _node_at(root: yaml.Node, loc: Sequence[str | int], key: bool = False) -> yaml.Node:
    """The deepest node along `loc`; with `key`, the key node of the last step (for unknown keys)."""
    node = root
    for depth, part in enumerate(loc):
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            found = next(((k, v) for k, v in node.value if getattr(k, "value", None) == part), None)
            if found is None:
                break
            node = found[0] if key and depth == len(loc) - 1 else found[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
    return node


# The `switchboard providers` commands, for app.py to mount with `cli.add_typer(providers_cli, ...)`.

providers_cli = typer.Typer(no_args_is_help=True, help="Check and list the channel providers.")
_PathArgument = Annotated[
    Path | None, typer.Argument(help="providers file (default: SWITCHBOARD_PROVIDERS)")
]


def _default_path(path: Path | None) -> Path:
    if path is not None:
        return path
    from settings import Settings  # late: app.py mounts this module's commands

    return Settings().providers


@providers_cli.command("check")
def check_command(
    path: _PathArgument = None,
    env: Annotated[bool, typer.Option("--env/--no-env", help="require the referenced variables")] = True,
) -> None:
    """Check the providers file (`path:line:col: message`); exit 1 on any error."""
    file = _default_path(path)
    errors = check_providers(file, require_env=env)
    for error in errors:
        typer.echo(str(error), err=True)
    if errors:
        raise typer.Exit(1)
    specs = load_providers(file, require_env=env)
    typer.echo(f"{file}: {len(specs)} provider(s) ok")


@providers_cli.command("list")
def list_command(path: _PathArgument = None) -> None:
    """List the enabled providers by channel and priority, secrets masked."""
    file = _default_path(path)
    try:
        specs = load_providers(file, require_env=False)
    except ProvidersFileError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    if not specs:
        typer.echo(f"{file}: no provider is enabled, so sms, push, WeChat and robot messages are not sent "
                   "(email, inbox and webhook come from the settings); see config/providers.example.yaml")
    for spec in sorted(specs, key=lambda s: (s.channel, s.priority)):
        shown = spec.masked()
        rate = f"{spec.rate.per_second:g}/s burst {spec.rate.burst:g}" if spec.rate else "unlimited"
        options = ", ".join(f"{k}={v}" for k, v in shown["options"].items())
        typer.echo(f"{spec.channel:<10} {spec.priority:>3} {spec.name:<20} {spec.kind:<10} {rate:<22} "
                   f"cost={spec.cost_per_message or 0:g}  {options}")

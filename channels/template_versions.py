"""Stored template versions as the catalog renders them: checked at save exactly as a template file is
at load (schema, jinja syntax with channel, field and line, undeclared variables), typed variables,
previews per channel from the samples, diffs between versions, and the worker's feed of live versions.
"""

from __future__ import annotations

import difflib
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import ValidationError

from channels.providers import ProviderSpec
from channels.sensitive import SensitiveWords
from channels.sms_segments import count_carrier_segments, count_segments
from channels.templates import CompiledTemplate, TemplateCatalog, TemplateError, TemplateFile
from state.template_store import TemplateStore, TemplateVersion, VariableType

log = logging.getLogger("switchboard.templates")

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_PHONE = re.compile(r"^\+?[0-9][0-9 \-]{5,19}$")


def type_problem(kind: VariableType, value: Any) -> str | None:
    """What is wrong with `value` as a `kind`; None when it fits."""
    if kind == "string":
        return None if isinstance(value, str | int | float) and not isinstance(value, bool) else \
            f"expected a string, got {type(value).__name__}"
    if kind == "boolean":
        return None if isinstance(value, bool) else f"expected true or false, got {value!r:.40}"
    if kind in ("number", "integer"):
        return _number_problem(kind, value)
    if not isinstance(value, str):
        return f"expected a {kind} as a string, got {type(value).__name__}"
    checks: dict[str, Callable[[str], bool]] = {
        "date": _is_date, "datetime": _is_datetime, "url": _is_url,
        "email": lambda v: bool(_EMAIL.match(v)), "phone": lambda v: bool(_PHONE.match(v)),
    }
    examples = {"date": "2026-09-01", "datetime": "2026-09-01T09:00:00+08:00",
                "url": "https://example.edu/x or /path", "email": "a@example.edu", "phone": "+8613800000000"}
    return None if checks[kind](value) else f"{value[:40]!r} is not a {kind} (e.g. {examples[kind]})"


def _number_problem(kind: str, value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return f"expected a {kind}, got {type(value).__name__}"
    try:
        number = float(value)
    except ValueError:
        return f"{str(value)[:40]!r} is not a {kind}"
    if kind == "integer" and not number.is_integer():
        return f"{value!r} is not an integer"
    return None


def _is_date(value: str) -> bool:
    try:
        date.fromisoformat(value)
    except ValueError:
        return False
    return True


def _is_datetime(value: str) -> bool:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _is_url(value: str) -> bool:
    parsed = urlsplit(value)
    return (parsed.scheme in ("http", "https") and bool(parsed.netloc)) or (
        value.startswith("/") and not value.startswith("//")
    )


def spec_of(version: TemplateVersion, description: str = "") -> TemplateFile:
    """The version in a template file's schema; a ValidationError names the channel and field."""
    return TemplateFile.model_validate(
        {
            "description": description,
            "variables": [v.name for v in version.variables if v.required],
            "optional": [v.name for v in version.variables if not v.required],
            **version.parts,
        }
    )


def compile_version(
    catalog: TemplateCatalog, name: str, version: TemplateVersion, description: str = ""
) -> CompiledTemplate:
    """The version compiled for `catalog.adopt_stored`, or TemplateError naming what is wrong."""
    where = f"template {name!r} version {version.number or '(new)'}"
    try:
        spec = spec_of(version, description)
    except ValidationError as exc:
        raise TemplateError(f"{where}: {_problems(exc)}") from exc
    names = [v.name for v in version.variables]
    if len(set(names)) != len(names):
        raise TemplateError(f"{where}: a variable is declared twice ({', '.join(sorted(names))})")
    for variable in version.variables:
        if variable.sample is not None and (problem := type_problem(variable.type, variable.sample)):
            raise TemplateError(f"{where}: variables.{variable.name}.sample: {problem}")
    checks = {v.name: _checker(v.type) for v in version.variables if v.type != "string"}
    return catalog.compile_spec(name, where, spec, version=version.number, checks=checks)


def _checker(kind: VariableType) -> Callable[[Any], str | None]:
    return lambda value: type_problem(kind, value)


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or 'template'}: {err['msg']}" for err in exc.errors()
    )


def sample_data(version: TemplateVersion) -> dict[str, Any]:
    """The declared variables' samples (absent ones left out, so the preview says what is missing)."""
    return {v.name: v.sample for v in version.variables if v.sample is not None}


@dataclass(frozen=True)
class Pricing:
    """A channel's estimated price per message, or per SMS segment when the provider bills so."""

    amount: float
    per_segment: bool = False


def prices_of(specs: Sequence[ProviderSpec]) -> dict[str, Pricing]:
    """Each channel's first provider's price (as budgets estimate it: channels/costs.py), per segment
    when the provider states `cost_per_segment` and no `cost_per_message`."""
    prices: dict[str, Pricing] = {}
    for spec in sorted(specs, key=lambda s: s.priority):
        if spec.channel in prices:
            continue
        per_message = spec.cost_per_message
        if per_message is None:
            per_message = getattr(spec.options, "cost_per_message", None)
        per_segment = getattr(spec.options, "cost_per_segment", None)
        if isinstance(per_message, int | float) and not isinstance(per_message, bool):
            prices[spec.channel] = Pricing(float(per_message))
        elif isinstance(per_segment, int | float) and not isinstance(per_segment, bool):
            prices[spec.channel] = Pricing(float(per_segment), per_segment=True)
        else:
            prices[spec.channel] = Pricing(0.0)
    return prices


def preview(
    catalog: TemplateCatalog,
    name: str,
    version: TemplateVersion,
    data: Mapping[str, Any] | None = None,
    words: SensitiveWords | None = None,
    prices: Mapping[str, Pricing] | None = None,
) -> dict[str, dict[str, Any]]:
    """Each channel's part rendered from `data` (default: the samples), without a recipient: the
    rendered fields, for SMS the segments, an estimated cost, and the problems content checks find."""
    single = _single(catalog, name, version)
    values = dict(sample_data(version) if data is None else data)
    out: dict[str, dict[str, Any]] = {}
    for channel in sorted(version.parts):
        entry: dict[str, Any] = {"problems": []}
        try:
            message = single.render(name, channel, values, None)
        except TemplateError as exc:
            entry["problems"].append(f"sandbox: {exc}")
            out[channel] = entry
            continue
        fields = message.model_dump(exclude={"template", "channel", "version"})
        entry["fields"] = {key: value for key, value in fields.items() if value}
        segments = 1
        if channel == "sms":
            gsm, carrier = count_segments(message.text), count_carrier_segments(message.text, "")
            entry["sms"] = {"encoding": gsm.encoding, "segments": gsm.segments, "length": gsm.length,
                            "carrier_segments": carrier.segments, "carrier_length": carrier.length}
            segments = max(gsm.segments, carrier.segments)
        price = (prices or {}).get(channel)
        billed = segments if price is not None and price.per_segment else 1
        entry["estimated_cost"] = round(price.amount * billed, 6) if price is not None else 0.0
        if words is not None:
            screened = words.screen(message)
            if screened.blocked_reason is not None:
                entry["problems"].append(f"content: {screened.blocked_reason}")
            elif screened.message != message:
                entry["problems"].append("content: sensitive words would be masked")
        out[channel] = entry
    return out


def _single(catalog: TemplateCatalog, name: str, version: TemplateVersion) -> TemplateCatalog:
    """A catalog serving only this version (the worker's catalog is left as it is)."""
    single = catalog.empty_copy()
    single.adopt_stored({name: compile_version(catalog, name, version)})
    return single


def diff(old: TemplateVersion, new: TemplateVersion, name: str) -> dict[str, str]:
    """A unified diff per channel part and of the variables (YAML, keys in a stable order); only what
    changed is present."""
    sections: dict[str, tuple[Any, Any]] = {
        channel: (old.parts.get(channel), new.parts.get(channel))
        for channel in sorted(set(old.parts) | set(new.parts))
    }
    sections["variables"] = (
        [v.model_dump(exclude_defaults=True) for v in old.variables],
        [v.model_dump(exclude_defaults=True) for v in new.variables],
    )
    out: dict[str, str] = {}
    for section, (before, after) in sections.items():
        lines = difflib.unified_diff(
            _yaml(before), _yaml(after),
            fromfile=f"{name}@{old.number}/{section}", tofile=f"{name}@{new.number}/{section}",
        )
        text = "".join(lines)
        if text:
            out[section] = text
    return out


def _yaml(value: Any) -> list[str]:
    if value is None:
        return []
    text = yaml.safe_dump(json.loads(json.dumps(value)), allow_unicode=True, sort_keys=True, width=100)
    return text.splitlines(keepends=True)


class StoredTemplateFeed:
    """Keeps a catalog's stored templates the live versions in Redis: one read of a counter per call,
    the live versions only when it moved. A version that no longer compiles (the rules changed under
    it) is left out and logged, and the others are served."""

    def __init__(self, store: TemplateStore, catalog: TemplateCatalog) -> None:
        self._store = store
        self._catalog = catalog
        self._generation: int | None = None
        # Compiled versions by (name, number): a publish compiles the one version that changed, not
        # every live one (~2.6 ms CPU each, on the worker's event loop).
        self._compiled: dict[tuple[str, int], CompiledTemplate] = {}

    def reading(self, store: TemplateStore) -> StoredTemplateFeed:
        """Read from `store` from now on (a client of another event loop), keeping what was compiled."""
        self._store = store
        return self

    async def refresh(self) -> bool:
        """Take the live versions if they changed; returns whether they did."""
        if self._generation is not None and await self._store.generation() == self._generation:
            return False
        generation, live = await self._store.live_versions()
        descriptions = {t.name: t.description for t in await self._store.all()} if live else {}
        compiled = {}
        for name, version in live.items():
            if self._catalog.is_file(name):
                log.warning("template %s: a file and a stored template share the name; the file is served",
                            name)
                continue
            key = (name, version.number)
            try:
                compiled[name] = self._compiled.get(key) or compile_version(
                    self._catalog, name, version, descriptions.get(name, "")
                )
            except TemplateError as exc:
                log.error("stored template %s version %d left out: %s", name, version.number, exc)
        self._catalog.adopt_stored(compiled)
        self._compiled = {(name, c.version): c for name, c in compiled.items()}
        self._generation = generation
        log.info("stored templates: %d live (%s)", len(compiled),
                 ", ".join(f"{n}@{v.number}" for n, v in sorted(live.items())) or "none")
        return True


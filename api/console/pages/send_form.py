"""The send screen's form as the campaigns API's `Composition`: targets (everyone, tags, user ids, a
segment, addresses typed in, an uploaded list), channels, time (now, scheduled, steady rate), strategy,
priority, category, template and its data. Errors come back per form field, in the API's words."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Literal, get_args

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from records.vocabulary import CHANNELS
from state.campaigns import Composition

Target = Literal["all", "tags", "user_ids", "segment", "addresses", "upload"]
TARGETS: tuple[Target, ...] = get_args(Target)
Timing = Literal["now", "scheduled", "steady"]
TIMINGS: tuple[Timing, ...] = get_args(Timing)
_SPLIT = re.compile(r"[\s,;，；]+")
_OFFSET = re.compile(r"^([+-])(\d{2}):(\d{2})$")
_PHONE = re.compile(r"^\+?\d[\d\- ]{4,}$")
DEFAULT_OFFSET = "+08:00"


@dataclass
class ComposerForm:
    """What the operator typed, kept as typed so a refused form is shown again unchanged."""

    app: str = ""
    name: str = ""
    target: str = "segment"
    tags: str = ""
    user_ids: str = ""
    segment: str = ""
    addresses: str = ""
    upload: str = ""
    channels: list[str] = field(default_factory=list)
    timing: str = "now"
    send_at: str = ""
    utc_offset: str = DEFAULT_OFFSET
    pace_per_second: str = ""
    strategy: str = ""
    priority: str = "normal"
    category: str = "notice"
    template: str = ""
    data: str = "{}"

    @classmethod
    def of(cls, form: Mapping[str, Any], channels: Sequence[str]) -> ComposerForm:
        """From the posted fields (`channels` the checked boxes, read with `getlist`)."""
        known = {name for name in cls.__dataclass_fields__ if name != "channels"}
        values = {name: str(form.get(name) or "").strip() for name in known if form.get(name) is not None}
        return cls(**values, channels=[c for c in channels if c])


@dataclass
class Parsed:
    composition: Composition | None
    errors: dict[str, str]


def composition_of(form: ComposerForm) -> Parsed:
    """The composition, or each wrong field with what is wrong with it."""
    errors: dict[str, str] = {}
    audience = _audience(form, errors)
    data: Any = {}
    try:
        data = json.loads(form.data or "{}")
    except json.JSONDecodeError as exc:
        errors["data"] = f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
    else:
        if not isinstance(data, dict):
            errors["data"] = "a JSON object of the template's variables, e.g. {\"name\": \"张三\"}"
    body: dict[str, Any] = {
        "app": form.app, "name": form.name or form.template, "audience": audience,
        "channels": form.channels or None, "strategy": form.strategy or None, "priority": form.priority,
        "category": form.category, "template": form.template, "data": data if isinstance(data, dict) else {},
    }
    if form.timing not in TIMINGS:
        errors["timing"] = f"one of {', '.join(TIMINGS)}"
    if form.timing == "scheduled":
        body["send_at"] = _send_at(form, errors)
    if form.timing == "steady":
        if not form.pace_per_second.isdigit():
            errors["pace_per_second"] = "a whole number of messages per second"
        else:
            body["pace_per_second"] = int(form.pace_per_second)
    if errors:
        return Parsed(None, errors)
    try:
        return Parsed(Composition.model_validate(body), {})
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            errors.setdefault(field_of(error["loc"], form), _message(error))
        return Parsed(None, errors)


def refusal_errors(exc: Exception, form: ComposerForm) -> dict[str, str]:
    """The API's refusal (422 naming the field, 403, 409) as form errors; `_form` when it names none."""
    if isinstance(exc, RequestValidationError):
        errors: dict[str, str] = {}
        for error in exc.errors():
            loc = tuple(error.get("loc", ()))
            errors.setdefault(field_of(loc[1:] if loc[:1] == ("body",) else loc, form), str(error["msg"]))
        return errors
    if isinstance(exc, HTTPException):
        return {"_form": str(exc.detail)}
    raise exc


def field_of(loc: Sequence[Any], form: ComposerForm) -> str:
    """The form field a model location names (the audience's selector is the chosen target's field)."""
    if not loc:
        return "_form"
    head = str(loc[0])
    if head == "audience":
        return form.target if form.target in TARGETS and form.target != "all" else "target"
    if head in ("send_at",):
        return "send_at"
    known = {*ComposerForm.__dataclass_fields__, "file"}  # the upload's file, posted with the form
    return head if head in known else "_form"


def _audience(form: ComposerForm, errors: dict[str, str]) -> dict[str, Any]:
    target = form.target
    if target == "all":
        return {"all": True}
    if target in ("tags", "user_ids"):
        values = [v for v in _SPLIT.split(getattr(form, target)) if v]
        if not values:
            errors[target] = "at least one, separated by commas or new lines"
        return {target: values}
    if target in ("segment", "upload"):
        chosen = getattr(form, target)
        if not chosen:
            errors[target] = f"choose a {target}"
        return {target: chosen}
    if target == "addresses":
        addresses = []
        for number, line in enumerate(form.addresses.splitlines(), start=1):
            entry = line.strip()
            if not entry:
                continue
            address = _address(entry)
            if address is None:
                errors["addresses"] = (f"line {number}: {entry[:60]!r} is neither a phone number nor an "
                                       "email; write channel:address for another channel (push:TOKEN)")
                break
            addresses.append(address)
        if not addresses and "addresses" not in errors:
            errors["addresses"] = "at least one phone number or email, one a line"
        return {"addresses": addresses}
    errors["target"] = f"one of {', '.join(TARGETS)}"
    return {}


def _address(entry: str) -> dict[str, str] | None:
    channel, colon, rest = entry.partition(":")
    if colon and channel in CHANNELS and rest.strip():
        return {"channel": channel, "address": rest.strip()}
    if "@" in entry and "." in entry.rpartition("@")[2]:
        return {"channel": "email", "address": entry}
    if _PHONE.match(entry):
        return {"channel": "sms", "address": entry.replace(" ", "").replace("-", "")}
    return None


def _send_at(form: ComposerForm, errors: dict[str, str]) -> str | None:
    """A datetime-local value read at the chosen UTC offset (the browser's field carries none)."""
    offset = _OFFSET.match(form.utc_offset)
    if offset is None:
        errors["utc_offset"] = "an offset such as +08:00"
        return None
    try:
        local = datetime.fromisoformat(form.send_at)
    except ValueError:
        errors["send_at"] = "a date and time, e.g. 2026-12-01T08:00"
        return None
    sign = 1 if offset.group(1) == "+" else -1
    zone = timezone(sign * timedelta(hours=int(offset.group(2)), minutes=int(offset.group(3))))
    return local.replace(tzinfo=zone).isoformat()


def _message(error: Mapping[str, Any]) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    return message

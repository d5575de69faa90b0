"""The template editor's form: one YAML box per channel part and a table of variables, turned into the
`VersionDraft` the API takes (the same checks follow, in `api.template_service.save`), and each refusal
placed next to the field it is about."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, get_args

import yaml
from pydantic import ValidationError

from api.template_service import VersionDraft
from state.template_store import TemplateVersion, VariableType

PART_CHANNELS: tuple[str, ...] = (
    "email", "inbox", "webhook", "sms", "push", "wechat_oa", "wechat_mp", "robot"
)
VARIABLE_TYPES: tuple[str, ...] = get_args(VariableType)
GENERAL = "general"
"""The error key of a refusal that names no one field."""


@dataclass
class EditorForm:
    """What the editor shows and posts back: text as typed, so a refused form comes back unchanged."""

    app: str = ""
    description: str = ""
    comment: str = ""
    parts: dict[str, str] = field(default_factory=dict)
    """Channel → the part's YAML ('' for no part)."""
    variables: list[dict[str, str]] = field(default_factory=list)
    """Rows of name, type, required (`yes`/`no`), sample, description, as typed."""
    errors: dict[str, str] = field(default_factory=dict)
    """Field (`app`, `comment`, `part_sms`, `variables`, `general`) → the message shown beside it."""


def form_of_version(version: TemplateVersion | None, blank_rows: int = 2) -> EditorForm:
    """The editor filled with a version (the next one starts from it), plus a few empty variable rows."""
    form = EditorForm()
    if version is not None:
        form.parts = {c: _yaml(part) for c, part in version.parts.items()}
        form.variables = [
            {"name": v.name, "type": v.type, "required": "yes" if v.required else "no",
             "sample": "" if v.sample is None else _sample_text(v.sample), "description": v.description}
            for v in version.variables
        ]
    form.variables += [_blank_row() for _ in range(blank_rows)]
    return form


def form_of_post(posted: Mapping[str, str], rows: Mapping[str, Sequence[str]]) -> EditorForm:
    """The form as posted: `posted` the single fields, `rows` the variable columns (`var_name`...)."""
    columns = ("name", "type", "required", "sample", "description")
    cells = {c: list(rows.get(f"var_{c}", ())) for c in columns}
    count = max((len(v) for v in cells.values()), default=0)
    variables = [
        {c: (cells[c][i] if i < len(cells[c]) else "") for c in columns} for i in range(count)
    ]
    return EditorForm(
        app=posted.get("app", "").strip(),
        description=posted.get("description", ""),
        comment=posted.get("comment", ""),
        parts={c: posted.get(f"part_{c}", "") for c in PART_CHANNELS if posted.get(f"part_{c}", "").strip()},
        variables=[row for row in variables if row["name"].strip()],
    )


def draft_of(form: EditorForm, new: bool) -> VersionDraft | None:
    """The draft the form describes, or None with `form.errors` saying what is wrong and where."""
    body: dict[str, Any] = {"comment": form.comment, "variables": [_variable(row) for row in form.variables]}
    if new:
        body["app"] = form.app or None
        body["description"] = form.description or None
    for channel, text in form.parts.items():
        try:
            part = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            form.errors[f"part_{channel}"] = f"{channel}: not valid YAML: {exc}"
            continue
        if not isinstance(part, dict):
            form.errors[f"part_{channel}"] = f"{channel}: a part is a mapping of its fields (subject: ...)"
            continue
        body[channel] = part
    if form.errors:
        return None
    try:
        return VersionDraft.model_validate(body)
    except ValidationError as exc:
        for error in exc.errors():
            where = str(error["loc"][0]) if error["loc"] else GENERAL
            key = where if where in ("app", "description", "comment", "variables") else GENERAL
            text = f"{'.'.join(map(str, error['loc']))}: {error['msg']}"
            form.errors.setdefault(key, text)
        return None


def place_refusal(form: EditorForm, detail: str) -> None:
    """Put the service's refusal beside the field it names (a part, the variables, the app)."""
    form.errors[field_of(detail)] = detail


def field_of(detail: str) -> str:
    """The form field a refusal is about: `... version (new): sms.text: ...` is `part_sms`."""
    for channel in PART_CHANNELS:
        if f": {channel}." in detail or f": {channel}:" in detail or detail.startswith(f"{channel}."):
            return f"part_{channel}"
    if detail.startswith("app:") or "belongs to app" in detail:
        return "app"
    if "variable" in detail or "sample" in detail:
        return "variables"
    return GENERAL


def _variable(row: Mapping[str, str]) -> dict[str, Any]:
    kind = row.get("type") or "string"
    return {"name": row["name"].strip(), "type": kind, "required": row.get("required", "yes") != "no",
            "sample": _sample(row.get("sample", ""), kind), "description": row.get("description", "")}


def _sample(text: str, kind: str) -> str | int | float | bool | None:
    """A typed sample from its text; one that does not read as its type stays text, so the save's own
    check names it (`day: 'Sept 1' is not a date`)."""
    if text == "":
        return None
    try:
        if kind == "integer":
            return int(text)
        if kind == "number":
            return float(text)
    except ValueError:
        return text
    if kind == "boolean" and text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text


def _sample_text(sample: object) -> str:
    return str(sample).lower() if isinstance(sample, bool) else str(sample)


def _blank_row() -> dict[str, str]:
    return {"name": "", "type": "string", "required": "yes", "sample": "", "description": ""}


def _yaml(part: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(part), allow_unicode=True, sort_keys=False, default_flow_style=False)

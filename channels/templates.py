"""Message templates: one YAML file per template, one part per channel, rendered in a jinja2 sandbox.

Every file is checked when the catalog loads (unknown keys, syntax errors, variables a part uses but
the file does not declare), so a bad template fails at start-up, not half-way through a campaign.
"""

from __future__ import annotations

import json
import keyword
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlsplit

import yaml
from jinja2 import StrictUndefined, meta
from jinja2 import Template as JinjaTemplate
from jinja2 import TemplateSyntaxError as JinjaSyntaxError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator, model_validator

from state.users import User

TemplateChannel = Literal["email", "inbox", "webhook", "sms", "push", "wechat_oa", "wechat_mp", "robot"]
# The variable every part may use besides the declared ones: the recipient's public profile.
USER_VARIABLE = "user"
# Fields whose rendered value a person may follow: only http(s) URLs and site-relative paths pass.
LINK_FIELDS = frozenset({"link"})
# WeChat's limit per key type (the key's prefix, e.g. thing1), in characters; over it the API
# answers 47003, so it is caught before sending.
WECHAT_LIMITS = {"thing": 20, "number": 32, "letter": 32, "symbol": 5, "character_string": 32,
                 "phone_number": 17, "car_number": 8, "name": 20, "phrase": 5, "amount": 12}
_WECHAT_KEY = re.compile(r"^([a-z_]+?)\d+$")


class TemplateError(ValueError):
    """A template that cannot load or render; the message names the file or template and the part."""


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _ProviderTemplate(_Part):
    """A part sent through templates registered with providers: ids are literal, params are jinja."""

    template_ids: dict[str, str] = {}
    """Provider name -> the id registered there (Aliyun `SMS_123`, Tencent `1234567`, WeChat ids)."""
    params: dict[str, str] = {}
    """Provider-side variable -> jinja; kept in file order (Tencent SMS params are positional)."""

    @field_validator("template_ids")
    @classmethod
    def _ids(cls, ids: dict[str, str]) -> dict[str, str]:
        for provider, template_id in ids.items():
            if not provider.strip() or not template_id.strip():
                raise ValueError(f"provider and template id must not be empty: {provider!r}: {template_id!r}")
        return ids

    @field_validator("params")
    @classmethod
    def _param_names(cls, params: dict[str, str]) -> dict[str, str]:
        for name in params:
            if not name.strip():
                raise ValueError("a param name must not be empty")
        return params


class EmailPart(_Part):
    subject: str
    text: str
    html: str | None = None


class InboxPart(_Part):
    title: str
    body: str
    link: str | None = None


class WebhookPart(_Part):
    body: str


class SmsPart(_ProviderTemplate):
    text: str
    """The message as a generic gateway sends it, and what content checks and segment counts read."""


class PushPart(_Part):
    title: str
    body: str
    link: str | None = None
    page: str | None = None


class WechatOaPart(_ProviderTemplate):
    """Official-account template message: `params` fill the template's `data` keys."""

    link: str | None = None
    page: str | None = None

    @model_validator(mode="after")
    def _registered(self) -> WechatOaPart:
        _need_registered(self, "wechat_oa")
        return self


class WechatMpPart(_ProviderTemplate):
    """Mini-program subscribe message."""

    page: str | None = None

    @model_validator(mode="after")
    def _registered(self) -> WechatMpPart:
        _need_registered(self, "wechat_mp")
        return self


class RobotPart(_Part):
    """A group robot message (DingTalk, WeCom, Feishu): `text` is markdown."""

    title: str
    text: str
    link: str | None = None


def _need_registered(part: _ProviderTemplate, channel: str) -> None:
    if not part.template_ids:
        raise ValueError(f"{channel} needs template_ids (provider: registered template id)")
    if not part.params:
        raise ValueError(f"{channel} needs params (the template's keys and their values)")


class TemplateFile(BaseModel):
    """The schema of one `templates/*.yaml` file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    variables: list[str] = []
    optional: list[str] = []
    email: EmailPart | None = None
    inbox: InboxPart | None = None
    webhook: WebhookPart | None = None
    sms: SmsPart | None = None
    push: PushPart | None = None
    wechat_oa: WechatOaPart | None = None
    wechat_mp: WechatMpPart | None = None
    robot: RobotPart | None = None

    @field_validator("variables", "optional")
    @classmethod
    def _identifiers(cls, names: list[str]) -> list[str]:
        for name in names:
            if not name.isidentifier() or keyword.iskeyword(name):
                raise ValueError(f"{name!r} is not a valid variable name")
            if name == USER_VARIABLE:
                raise ValueError(f"{USER_VARIABLE!r} is reserved for the recipient's profile")
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate names in {names}")
        return names

    def parts(self) -> dict[TemplateChannel, _Part]:
        found: dict[TemplateChannel, _Part | None] = {
            channel: getattr(self, channel) for channel in get_args(TemplateChannel)
        }
        return {channel: part for channel, part in found.items() if part is not None}


class RenderedMessage(BaseModel):
    """A template rendered for one channel: the fields that channel needs, the others empty."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    template: str
    channel: str
    subject: str = ""
    text: str = ""
    html: str | None = None
    title: str = ""
    body: str = ""
    link: str = ""
    template_ids: dict[str, str] = {}
    """Provider -> the template registered with that provider (SMS template code, WeChat template id)."""
    params: dict[str, str] = {}
    """Named values for a provider-side template (SMS params, WeChat `data` keys), in template order."""
    page: str = ""
    """A mini-program page or app deep link the message opens."""
    version: int = 0
    """The stored template's version rendered (0: a template file); receipts record it."""


@dataclass(frozen=True)
class _CompiledPart:
    """One channel's part: jinja per field, jinja per provider param, literal provider template ids."""

    fields: dict[str, JinjaTemplate]
    params: dict[str, JinjaTemplate]
    template_ids: dict[str, str]


@dataclass(frozen=True)
class CompiledTemplate:
    """A loaded template: its declared variables and each channel's compiled part."""

    name: str
    source: str
    description: str
    required: frozenset[str]
    optional: frozenset[str]
    parts: dict[str, _CompiledPart]
    version: int = 0
    """The stored version (0: a file)."""
    checks: dict[str, Callable[[Any], str | None]] = dataclass_field(default_factory=dict)
    """Variable → what is wrong with a value of its declared type (stored templates declare types)."""


class TemplateCatalog:
    """Every template of a folder, validated at load time and rendered in a sandbox, and the live
    versions of stored templates (`adopt_stored`). A file wins over a stored template of its name: the
    API refuses to create such a name, so only a file added later can collide (logged)."""

    def __init__(self, folder: Path) -> None:
        # Two environments because only HTML is escaped: text, SMS and JSON bodies must stay verbatim.
        self._plain = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
        self._html = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=True)
        if not folder.is_dir():
            raise TemplateError(f"template folder {folder} does not exist")
        self._files: dict[str, CompiledTemplate] = {}
        for path in sorted(folder.glob("*.yaml")):
            compiled = self._load(path)
            self._files[compiled.name] = compiled
        self._stored: dict[str, CompiledTemplate] = {}
        self._templates = dict(self._files)

    @property
    def names(self) -> list[str]:
        return sorted(self._templates)

    def adopt(self, other: TemplateCatalog) -> None:
        """Serve `other`'s templates from now on, in one assignment: every stage holding this catalog
        sees the new set at once, and a render sees the old set or the new, never a mix. The live
        stored versions stay."""
        self._files = other._files
        self._templates = {**self._stored, **self._files}

    def adopt_stored(self, compiled: Mapping[str, CompiledTemplate]) -> None:
        """Serve these live versions of stored templates from now on, in one assignment."""
        self._stored = dict(compiled)
        self._templates = {**self._stored, **self._files}

    def empty_copy(self) -> TemplateCatalog:
        """A catalog with this one's sandboxes and no template (a preview's own)."""
        copy = object.__new__(TemplateCatalog)
        copy._plain, copy._html = self._plain, self._html
        copy._files, copy._stored, copy._templates = {}, {}, {}
        return copy

    def is_file(self, template: str) -> bool:
        """Whether a template file of this name is loaded (file names cannot be stored templates)."""
        return template in self._files

    def version_of(self, template: str) -> int | None:
        """The version served for `template` (0: a file), None when unknown."""
        compiled = self._templates.get(template)
        return None if compiled is None else compiled.version

    def parts(self) -> dict[str, frozenset[str]]:
        """Each template's name with the channels it has a part for."""
        return {name: frozenset(compiled.parts) for name, compiled in self._templates.items()}

    def __contains__(self, template: object) -> bool:
        return template in self._templates

    def channels_of(self, template: str) -> frozenset[str]:
        """The channels the template has a part for."""
        return frozenset(self._get(template).parts)

    def check_data(self, template: str, data: Mapping[str, Any]) -> list[str]:
        """Problems that would stop the template rendering with this data; empty when it is fine."""
        compiled = self._templates.get(template)
        if compiled is None:
            return [f"unknown template {template!r} (known: {', '.join(self.names) or 'none'})"]
        missing = sorted(compiled.required - data.keys())
        if missing:
            return [f"template {template!r} needs variable(s) {', '.join(missing)}"]
        wrong = [f"{name}: {problem}" for name, check in compiled.checks.items()
                 if data.get(name) is not None and (problem := check(data[name])) is not None]
        if wrong:
            return [f"template {template!r} version {compiled.version}: {'; '.join(wrong)}"]
        return []

    def render(
        self, template: str, channel: str, data: Mapping[str, Any], user: User | None
    ) -> RenderedMessage:
        """Render every field of the channel's part, or raise TemplateError: never half a message."""
        compiled = self._get(template)
        part = compiled.parts.get(channel)
        if part is None:
            have = ", ".join(sorted(compiled.parts)) or "none"
            raise TemplateError(f"template {template!r} has no {channel!r} part (it has: {have})")
        problems = self.check_data(template, data)
        if problems:
            raise TemplateError("; ".join(problems))
        context = _context(compiled, data, user)
        rendered = {f: _render(template, f"{channel}.{f}", j, context) for f, j in part.fields.items()}
        params = {k: _render(template, f"{channel}.params.{k}", j, context) for k, j in part.params.items()}
        for field in LINK_FIELDS & rendered.keys():
            _check_link(template, f"{channel}.{field}", rendered[field])
        if channel in ("wechat_oa", "wechat_mp"):
            for key, value in params.items():
                _check_wechat_value(template, f"{channel}.params.{key}", key, value)
        if channel == "webhook":
            try:
                json.loads(rendered["body"])
            except ValueError as exc:
                raise TemplateError(
                    f"template {template!r} webhook.body did not render to JSON ({exc}); "
                    "insert values with the tojson filter"
                ) from exc
        return RenderedMessage(
            template=template,
            channel=channel,
            template_ids=dict(part.template_ids),
            params=params,
            version=compiled.version,
            **rendered,
        )

    def _get(self, template: str) -> CompiledTemplate:
        compiled = self._templates.get(template)
        if compiled is None:
            raise TemplateError(f"unknown template {template!r} (known: {', '.join(self.names) or 'none'})")
        return compiled

    def _load(self, path: Path) -> CompiledTemplate:
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise TemplateError(f"{path}: cannot read: {exc}") from exc
        try:
            spec = TemplateFile.model_validate(raw if raw is not None else {})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'file'}: {err['msg']}" for err in exc.errors()
            )
            raise TemplateError(f"{path}: {problems}") from exc
        return self.compile_spec(path.stem, str(path), spec)

    def compile_spec(
        self,
        name: str,
        where: str,
        spec: TemplateFile,
        version: int = 0,
        checks: Mapping[str, Callable[[Any], str | None]] | None = None,
    ) -> CompiledTemplate:
        """Check and compile one template's parts (a file's, or a stored version's); errors begin with
        `where` and name the channel, field and line."""
        overlap = set(spec.variables) & set(spec.optional)
        if overlap:
            raise TemplateError(f"{where}: {sorted(overlap)} listed in both variables and optional")
        if not spec.parts():
            raise TemplateError(
                f"{where}: no channel part (add one of {', '.join(get_args(TemplateChannel))})"
            )
        declared = set(spec.variables) | set(spec.optional) | {USER_VARIABLE}
        parts: dict[str, _CompiledPart] = {}
        for channel, part in spec.parts().items():
            sources = part.model_dump(exclude_none=True, exclude={"template_ids", "params"})
            fields = {
                f: self._compile(where, f"{channel}.{f}", f, src, declared) for f, src in sources.items()
            }
            params: dict[str, JinjaTemplate] = {}
            template_ids: dict[str, str] = {}
            if isinstance(part, _ProviderTemplate):
                params = {
                    k: self._compile(where, f"{channel}.params.{k}", k, src, declared)
                    for k, src in part.params.items()
                }
                template_ids = dict(part.template_ids)
            parts[channel] = _CompiledPart(fields, params, template_ids)
        return CompiledTemplate(
            name=name,
            source=where,
            description=spec.description,
            required=frozenset(spec.variables),
            optional=frozenset(spec.optional),
            parts=parts,
            version=version,
            checks=dict(checks or {}),
        )

    def _compile(self, path: str, where: str, field: str, source: str, declared: set[str]) -> JinjaTemplate:
        env = self._html if field == "html" else self._plain
        try:
            used = meta.find_undeclared_variables(env.parse(source))
            compiled = env.from_string(source)
        except JinjaSyntaxError as exc:
            raise TemplateError(f"{path}: {where}: line {exc.lineno}: {exc.message}") from exc
        unknown = sorted(used - declared)
        if unknown:
            raise TemplateError(
                f"{path}: {where} uses undeclared variable(s) {', '.join(unknown)} "
                "(declare them under variables or optional)"
            )
        return compiled


def _render(template: str, where: str, jinja: JinjaTemplate, context: dict[str, Any]) -> str:
    try:
        return jinja.render(context)
    except Exception as exc:  # a template can raise anything its expressions do
        raise TemplateError(f"template {template!r} {where}: {type(exc).__name__}: {exc}") from exc


def _check_wechat_value(template: str, where: str, key: str, value: str) -> None:
    kind = _WECHAT_KEY.match(key)
    limit = WECHAT_LIMITS.get(kind.group(1)) if kind else None
    if not value.strip():
        raise TemplateError(f"template {template!r} {where} rendered empty; WeChat refuses empty values")
    if limit is not None and len(value) > limit:
        raise TemplateError(
            f"template {template!r} {where} is {len(value)} characters, WeChat allows {limit} for "
            f"{kind.group(1) if kind else key} (shorten it, e.g. | truncate({limit}, true, '…', 0))"
        )


def _check_link(template: str, where: str, link: str) -> None:
    """A link must be http(s) or site-relative, so data cannot smuggle in `javascript:` or `data:`."""
    if not link:
        return
    parsed = urlsplit(link.strip())
    relative = not parsed.scheme and not parsed.netloc and link.startswith("/") and not link.startswith("//")
    if relative or (parsed.scheme in ("http", "https") and parsed.netloc):
        return
    raise TemplateError(
        f"template {template!r} {where} rendered to {link[:80]!r}: a link must be an http(s) URL "
        "or a path starting with /"
    )


def _context(compiled: CompiledTemplate, data: Mapping[str, Any], user: User | None) -> dict[str, Any]:
    """Declared variables only; absent optional ones are None so `{% if teacher %}` works."""
    context: dict[str, Any] = {name: data.get(name) for name in compiled.optional}
    context.update({name: data[name] for name in compiled.required})
    # Templates see the public profile, not the user's channel addresses.
    context[USER_VARIABLE] = {
        "user_id": user.user_id if user else "",
        "name": user.name if user else "",
        "locale": user.locale if user else "",
        "timezone": user.timezone if user else "",
    }
    return context

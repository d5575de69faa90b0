"""Import users into the directory from CSV or JSON Lines, streaming, with per-row errors.

CSV columns (only `user_id` is required): see `COLUMNS`. Tags are `;`-separated, `inbox` is
yes/no/true/false/1/0. JSON Lines holds one object per line, either in the `User` model shape
(with `bindings`) or in the flat CSV shape. Bad rows are reported and skipped; good rows are kept.
"""

from __future__ import annotations

import asyncio
import csv
import difflib
import json
import re
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any, Literal, TextIO

from pydantic import BaseModel, ConfigDict, ValidationError

from settings.errors import SwitchboardError
from state.users import User, UserDirectory

Format = Literal["csv", "jsonl"]

COLUMNS: tuple[str, ...] = (
    "user_id",
    "name",
    "timezone",
    "locale",
    "tags",
    "channel_pref",
    "email",
    "phone",
    "push_token",
    "wechat_openid",
    "wechat_mp_openid",
    "inbox",
    "webhook",
    "robot",
)
# Flat column -> the channel its value binds.
BINDING_COLUMNS: dict[str, str] = {
    "email": "email",
    "phone": "sms",
    "push_token": "push",
    "wechat_openid": "wechat_oa",
    "wechat_mp_openid": "wechat_mp",
    "webhook": "webhook",
    "robot": "robot",  # a chat-robot name from the providers file (an on-call group)
}
_MODEL_FIELDS = frozenset(User.model_fields)
_FLAT_ONLY = frozenset(COLUMNS) - _MODEL_FIELDS
_EXTENSIONS: dict[str, Format] = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
# Columns that may hold several addresses, `;`-separated (two mailboxes, a token per device).
_SEVERAL = frozenset({"email", "phone", "push_token"})
_TRUE = frozenset({"yes", "true", "1", "y"})
_FALSE = frozenset({"no", "false", "0", "n", ""})
_PHONE_NOISE = re.compile(r"[\s\-().]")
_CN_MOBILE = re.compile(r"^1[3-9]\d{9}$")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")

BATCH_SIZE = 2000


class ImportFileError(SwitchboardError, ValueError):
    """The file as a whole cannot be imported (missing, not UTF-8, unknown format, no header row)."""


class RowError(BaseModel):
    """One rejected row: its line number in the file, the field at fault and why."""

    model_config = ConfigDict(frozen=True)

    line: int
    field: str
    message: str


class ImportReport(BaseModel):
    """What an import did: rows imported and rejected, and the errors (the first `max_errors`).

    A user repeated in the file counts once per row; the last row wins."""

    path: str
    imported: int = 0
    rejected: int = 0
    errors: list[RowError] = []

    def describe(self) -> list[str]:
        """Errors as `file:line: field: message` lines, the way editors and CI logs read them."""
        return [f"{self.path}:{e.line}: {e.field or '(row)'}: {e.message}" for e in self.errors]


class _RowRejected(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


async def import_users(
    path: str | Path,
    directory: UserDirectory,
    format: Format | None = None,
    *,
    max_errors: int = 1000,
    progress: Callable[[int], None] | None = None,
) -> ImportReport:
    """Read users from `path` (format from the extension unless given) and upsert the valid ones.
    `progress` is told the bytes of the file read so far after each batch (for a progress bar)."""
    path = Path(path)
    fmt = format or _format_of(path)
    check_readable(path)
    report = ImportReport(path=str(path))
    position = _Position()
    # A dict, so a user repeated within one batch is written once, last row winning.
    batch: dict[str, User] = {}
    writing: asyncio.Future[None] | None = None
    rows = _csv_rows(path, position) if fmt == "csv" else _jsonl_rows(path, position)
    for line, parsed in rows:
        if isinstance(parsed, _RowRejected):
            report.rejected += 1
            if len(report.errors) < max_errors:
                report.errors.append(RowError(line=line, field=parsed.field, message=parsed.message))
            continue
        batch[parsed.user_id] = parsed
        report.imported += 1
        if len(batch) >= BATCH_SIZE:
            if writing is not None:
                await writing  # one batch in flight: the next one reads profiles this one wrote
            writing = asyncio.ensure_future(directory.upsert(list(batch.values())))
            # Let it send its commands; the next batch is parsed while Redis answers.
            await asyncio.sleep(0)
            batch = {}
            if progress is not None:
                progress(position.offset)
    if writing is not None:
        await writing
    if batch:
        await directory.upsert(list(batch.values()))
    if progress is not None:
        progress(path.stat().st_size)  # the whole file: the reader has closed it
    return report


class _Position:
    """How far into the file the reader is, in bytes (a text file's tell() is unusable while it is
    iterated, so the file object itself is asked through its binary buffer)."""

    def __init__(self) -> None:
        self.handle: TextIO | None = None

    @property
    def offset(self) -> int:
        return self.handle.buffer.tell() if self.handle is not None else 0


def check_readable(path: Path) -> None:
    """Refuse, before any row is imported, a file that is missing, unreadable or not UTF-8 text."""
    line = 0
    try:
        with path.open("rb") as handle:
            # Line by line is safe for UTF-8: a newline byte never occurs inside a multi-byte character.
            for raw in handle:
                line += 1
                raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ImportFileError(
            f"{path}:{line}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x}); save it as UTF-8, "
            "e.g. `iconv -f GB18030 -t UTF-8 in.csv > out.csv`"
        ) from None
    except IsADirectoryError:
        raise ImportFileError(f"{path}: is a folder, not a file of users") from None
    except OSError as exc:
        raise ImportFileError(f"{path}: cannot read it: {exc.strerror}") from None


def check_importable(path: Path, format: Format | None = None) -> None:
    """check_readable, and the format and the header: what makes the whole file unusable is found
    before anything is imported (or audited)."""
    check_readable(path)
    fmt = format or _format_of(path)
    next(iter(_csv_rows(path) if fmt == "csv" else _jsonl_rows(path)), None)


def _format_of(path: Path) -> Format:
    fmt = _EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise ImportFileError(
            f"{path}: cannot tell the format from the extension {path.suffix!r}; "
            f"use one of {', '.join(_EXTENSIONS)} or pass format='csv' or 'jsonl'"
        )
    return fmt


def _csv_rows(path: Path, position: _Position | None = None) -> Iterator[tuple[int, User | _RowRejected]]:
    with path.open(newline="", encoding="utf-8-sig") as handle:
        if position is not None:
            position.handle = handle
        reader = csv.DictReader(handle)
        header = [name.strip() for name in reader.fieldnames or []]
        if not header:
            raise ImportFileError(f"{path}: empty file, expected a header row with {', '.join(COLUMNS)}")
        unknown = [name for name in header if name not in COLUMNS]
        if len(unknown) == len(header) and not any(difflib.get_close_matches(n, COLUMNS) for n in header):
            raise ImportFileError(
                f"{path}:1: no header row (the first line names no known column); "
                f"start the file with a line like: user_id,name,email,phone"
            )
        if unknown:
            raise ImportFileError(f"{path}:1: unknown column(s) {_with_suggestions(unknown, COLUMNS)}")
        if "user_id" not in header:
            raise ImportFileError(f"{path}:1: missing the required column 'user_id'")
        reader.fieldnames = header
        next_line = reader.line_num + 1
        for record in reader:
            line, next_line = next_line, reader.line_num + 1
            if None in record:  # more cells than header columns
                cells = len(header) + len(record[None])
                yield line, _RowRejected("", f"{cells} cells, the header has {len(header)}")
                continue
            yield line, _parse(partial(_from_flat, record))


def _jsonl_rows(path: Path, position: _Position | None = None) -> Iterator[tuple[int, User | _RowRejected]]:
    with path.open(encoding="utf-8-sig") as handle:
        if position is not None:
            position.handle = handle
        for line, text in enumerate(handle, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                yield line, _RowRejected("", f"not valid JSON: {exc.msg} at column {exc.colno}")
                continue
            if not isinstance(obj, dict):
                yield line, _RowRejected("", f"expected a JSON object, got {type(obj).__name__}")
                continue
            yield line, _parse(partial(_from_json_object, obj))


def _parse(build: Callable[[], User]) -> User | _RowRejected:
    try:
        return build()
    except _RowRejected as rejected:
        return rejected
    except ValidationError as exc:
        return _rejection(exc, flat=False)


def _rejection(exc: ValidationError, flat: bool) -> _RowRejected:
    """The first pydantic error, named by its field (for flat rows, by the column it came from)."""
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"])
    if flat:
        field = _column_for(field)
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return _RowRejected(field, f"{first['msg']}{more}")


def _from_json_object(obj: dict[str, Any]) -> User:
    unknown = [key for key in obj if key not in _MODEL_FIELDS and key not in COLUMNS]
    if unknown:
        known = (*COLUMNS, "bindings")
        raise _RowRejected(unknown[0], f"unknown field(s) {_with_suggestions(unknown, known)}")
    flat_only = sorted(key for key in obj if key in _FLAT_ONLY)
    if "bindings" in obj and flat_only:
        raise _RowRejected(
            flat_only[0], f"mixes 'bindings' with flat address fields {flat_only}; use one shape per row"
        )
    if flat_only or isinstance(obj.get("tags"), str):
        return _from_flat(obj)
    bindings = obj.get("bindings") or {}
    if not isinstance(bindings, dict):
        raise _RowRejected("bindings", f"expected an object of channel -> address, got {bindings!r}")
    bindings = {c: _cleaned(c, str(a), f"bindings.{c}") for c, a in bindings.items()}
    addresses = obj.get("addresses") or {}
    if not isinstance(addresses, dict):
        raise _RowRejected("addresses", f"expected an object of channel -> [addresses], got {addresses!r}")
    addresses = {
        channel: [
            {**item, "address": _cleaned(channel, str(item.get("address", "")), f"addresses.{channel}[{n}]")}
            if isinstance(item, dict) else item
            for n, item in enumerate(items)
        ] if isinstance(items, list) else items
        for channel, items in addresses.items()
    }
    return User.model_validate({**obj, "bindings": bindings, "addresses": addresses})


def _from_flat(row: Mapping[str, Any]) -> User:
    values = {key: value for key, value in row.items() if value is not None and value != ""}
    profile: dict[str, Any] = {
        key: values[key] for key in ("user_id", "name", "timezone", "locale", "channel_pref") if key in values
    }
    tags = values.get("tags", ())
    profile["tags"] = [t.strip() for t in tags.split(";") if t.strip()] if isinstance(tags, str) else tags
    bindings: dict[str, str] = {}
    several: dict[str, list[dict[str, Any]]] = {}
    for column, channel in BINDING_COLUMNS.items():
        if column not in values:
            continue
        text = str(values[column]).strip()
        if column in _SEVERAL and ";" in text:
            # `a@x.cn;b@x.cn`: several addresses, the first primary.
            cleaned = [_cleaned(channel, part.strip(), column) for part in text.split(";") if part.strip()]
            several[channel] = [{"address": a, "primary": n == 0} for n, a in enumerate(cleaned)]
        else:
            bindings[channel] = _cleaned(channel, text, column)
    if _truthy(values.get("inbox", ""), field="inbox"):
        user_id = values.get("user_id")
        if not isinstance(user_id, str):
            raise _RowRejected("user_id", "required to bind the inbox")
        bindings["inbox"] = user_id
    profile["bindings"] = bindings
    if several:
        profile["addresses"] = several
    try:
        return User.model_validate(profile)
    except ValidationError as exc:
        raise _rejection(exc, flat=True) from exc


def _cleaned(channel: str, address: str, field: str) -> str:
    """Emails and phones checked and normalised as the importer always did (cheaper than at send)."""
    if channel == "email":
        return _checked_email(address, field=field)
    if channel == "sms":
        return _e164(address, field=field)
    return address


def _truthy(value: Any, field: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _RowRejected(field, f"expected yes/no/true/false/1/0, got {value!r}")


def _checked_email(value: str, field: str) -> str:
    """A minimal check (one @, a dotted domain, no spaces); the mail server has the last word."""
    value = value.strip()
    local, at, domain = value.partition("@")
    labels = domain.split(".")
    if not at or not local or "@" in domain or len(labels) < 2 or not all(labels) or re.search(r"\s", value):
        raise _RowRejected(field, f"not an email address: {value!r}")
    return value


def _e164(value: str, field: str) -> str:
    """`+` numbers as given, 11-digit Chinese mobiles as +86; anything else is rejected."""
    digits = _PHONE_NOISE.sub("", value)
    if _E164.fullmatch(digits):
        return digits
    if _CN_MOBILE.fullmatch(digits):
        return f"+86{digits}"
    raise _RowRejected(
        field, f"not a phone number in E.164 (+country code) or an 11-digit Chinese mobile: {value!r}"
    )


def _column_for(field: str) -> str:
    """Name a model error by the column the user wrote (bindings.sms came from `phone`)."""
    if not field.startswith("bindings."):
        return field
    channel = field.removeprefix("bindings.").split(".")[0]
    return next((column for column, bound in BINDING_COLUMNS.items() if bound == channel), field)


def _with_suggestions(names: list[str], known: tuple[str, ...]) -> str:
    described = []
    for name in names:
        close = difflib.get_close_matches(name, known, n=1)
        described.append(f"{name!r} (did you mean {close[0]!r}?)" if close else repr(name))
    return f"{', '.join(described)}; known: {', '.join(known)}"

"""Reading an uploaded recipient list: CSV (UTF-8 with or without BOM, or GBK/GB18030 as Excel in China
saves it) or XLSX, one row at a time, each row cleaned as at send (`channels.addresses`).

Nothing holds the whole file: CSV goes through `csv.reader` over the open file, XLSX through openpyxl's
read-only mode, and rows come out in batches (`read_batches`). A file that cannot be read at all (an
unknown encoding, no way to tell what a column holds) is an `UploadRefused` naming why; a bad row is a
`RowError` and the rest are kept.
"""

from __future__ import annotations

import asyncio
import codecs
import csv
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from channels.addresses import AddressRefused, CleanAddress, Cleaned, email, phone
from settings import SwitchboardError
from state.uploads import CHANNEL_OF, KINDS, Recipient, RowError, Upload, UploadKind, UploadStore

HEADERS: dict[UploadKind, tuple[str, ...]] = {
    "phone": ("phone", "mobile", "手机号", "手机", "手机号码"),
    "email": ("email", "e-mail", "邮箱", "电子邮箱"),
    "user_id": ("user_id", "userid", "用户id"),
}
_KIND_OF_HEADER = {name: kind for kind, names in HEADERS.items() for name in names}
_SNIFF_BYTES = 64 * 1024
_MAX_CELL = 512  # a recipient's address is at most this long (`RawAddress`)
_NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")


class UploadRefused(SwitchboardError):
    """The file as a whole cannot be read as a recipient list; the text says why and what to do."""


@dataclass(frozen=True)
class Batch:
    """Some rows of the file: how many were read, the cleaned recipients, the refused rows."""

    rows: int
    found: list[Recipient]
    errors: list[RowError]


@dataclass(frozen=True)
class FileShape:
    """What the file is: its format, its encoding (CSV), what its column holds and where."""

    file_format: str
    encoding: str
    kind: UploadKind
    column: int
    column_name: str
    header: bool


def file_format(path: Path) -> str:
    """`xlsx` or `csv`, from the first bytes (a name's extension can lie)."""
    with path.open("rb") as f:
        start = f.read(8)
    if start.startswith(b"PK\x03\x04"):
        return "xlsx"
    if start.startswith(b"\xd0\xcf\x11\xe0"):
        raise UploadRefused("the file is an old Excel .xls workbook: save it as .xlsx or CSV")
    return "csv"


def csv_encoding(path: Path, chunk: int = 1 << 20) -> str:
    """`utf-8-sig` (with or without a BOM) or `gb18030` (GBK's superset); else UploadRefused."""
    with path.open("rb") as f:
        start = f.read(4)
    if start.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise UploadRefused("the file is UTF-16 (Excel's 'Unicode text'): save it as CSV UTF-8 or CSV (GBK)")
    failures = []
    for encoding in ("utf-8-sig", "gb18030"):
        offset = _undecodable(path, encoding, chunk)
        if offset is None:
            return encoding
        failures.append(f"as {'UTF-8' if encoding == 'utf-8-sig' else 'GBK/GB18030'} at byte {offset}")
    raise UploadRefused(
        f"the file is neither UTF-8 nor GBK/GB18030 (cannot be read {' nor '.join(failures)}): "
        "save it as CSV UTF-8"
    )


def _undecodable(path: Path, encoding: str, chunk: int) -> int | None:
    """The offset of the first byte `encoding` cannot read, or None when the whole file reads."""
    decoder = codecs.getincrementaldecoder(encoding)()
    offset = 0
    with path.open("rb") as f:
        while True:
            data = f.read(chunk)
            try:
                decoder.decode(data, final=not data)
            except UnicodeDecodeError as exc:
                return offset + max(0, exc.start)
            if not data:
                return None
            offset += len(data)


def shape_of(path: Path, kind: UploadKind | None) -> FileShape:
    """Read the first row: the column to use and whether that row is a header."""
    fmt = file_format(path)
    encoding = csv_encoding(path) if fmt == "csv" else ""
    first: list[str] = []
    for _, cells in _rows(path, fmt, encoding):
        if isinstance(cells, list) and any(cells):
            first = cells
            break
    named = [(i, _KIND_OF_HEADER[c.strip().lower()]) for i, c in enumerate(first)
             if c.strip().lower() in _KIND_OF_HEADER]
    if named:
        wanted = [(i, k) for i, k in named if kind is None or k == kind]
        if kind is not None and not wanted:
            raise UploadRefused(
                f"kind {kind} was given, but the header row has no {kind} column "
                f"(one of {', '.join(HEADERS[kind])}); it names {', '.join(first[i] for i, _ in named)}"
            )
        if len({k for _, k in wanted}) > 1:
            names = ", ".join(first[i] for i, _ in wanted)
            raise UploadRefused(f"the header row names several kinds of column ({names}): choose one by kind")
        column, chosen = wanted[0]
        return FileShape(fmt, encoding, chosen, column, first[column].strip(), header=True)
    if kind is None:
        raise UploadRefused(
            "say what the file holds: give kind (phone, email or user_id), or start it with a header "
            "row naming the column (phone/mobile/手机号, email/邮箱, user_id/用户ID)"
        )
    return FileShape(fmt, encoding, kind, 0, "A", header=False)


def read_batches(path: Path, shape: FileShape, size: int = 5000) -> Iterator[Batch]:
    """The file's data rows, cleaned, `size` rows a batch; blank rows are skipped."""
    rows, found, errors = 0, list[Recipient](), list[RowError]()
    channel = CHANNEL_OF[shape.kind]
    column = shape.column_name if shape.header else _letter(shape.column)
    rows_read = _rows(path, shape.file_format, shape.encoding)
    if shape.header:
        for _, cells in rows_read:
            if isinstance(cells, list) and any(cells):
                break
    for number, cells in rows_read:
        if isinstance(cells, RowError):
            rows += 1
            errors.append(cells)
        elif any(cells):
            rows += 1
            value = cells[shape.column].strip() if shape.column < len(cells) else ""
            cleaned = _cleaned(shape.kind, value, number, column)
            if isinstance(cleaned, RowError):
                errors.append(cleaned)
            else:
                found.append(Recipient(number, column, cleaned, channel))
        if rows >= size:
            yield Batch(rows, found, errors)
            rows, found, errors = 0, [], []
    if rows:
        yield Batch(rows, found, errors)


def _cleaned(kind: UploadKind, value: str, row: int, column: str) -> str | RowError:
    if not value:
        return RowError(row, column, "", f"empty {kind}")
    if len(value) > _MAX_CELL:
        return RowError(row, column, mask(kind, value[:20]), f"longer than {_MAX_CELL} characters")
    if kind == "user_id":
        return value if _NAME.match(value) else RowError(
            row, column, value[:64], "not a user id (letters, digits and _ . : - only, at most 128)"
        )
    result = mainland_mobile(value) if kind == "phone" else email(value)
    if isinstance(result, AddressRefused):
        # The cleaners quote the value; a report names it masked.
        shown = repr(value if len(value) <= 64 else value[:61] + "...")
        return RowError(row, column, mask(kind, value), result.reason.replace(shown, repr(mask(kind, value))))
    return result.value


def mainland_mobile(value: str) -> Cleaned:
    """`channels.addresses.phone`, answered from a verdict per 5-digit prefix for the common shape of a
    mainland mobile number (11 digits from 13 to 19, with or without +86, spaces or dashes). The CN
    mobile patterns of libphonenumber decide on at most the first five digits, and a number from 13 to
    19 is never a fixed line, so the first number of a prefix decides for the rest; the reason a number
    is refused still comes from `phone` itself. Cleaning was ~19 µs a number, most of a row's cost."""
    shape = _MAINLAND_MOBILE.match(value.replace(" ", "").replace("-", ""))
    if shape is None:
        return phone(value)
    national = shape.group(1)
    verdict = _MOBILE_PREFIXES.get(national[:5])
    if verdict is None:
        result = phone(value)
        _MOBILE_PREFIXES[national[:5]] = isinstance(result, CleanAddress) and result.value == f"+86{national}"
        return result
    return CleanAddress(f"+86{national}") if verdict else phone(value)


_MAINLAND_MOBILE = re.compile(r"^(?:\+86)?(1[3-9]\d{9})$")
_MOBILE_PREFIXES: dict[str, bool] = {}  # at most 7,000 prefixes (13000 to 19999)


def mask(kind: str, value: str) -> str:
    """A personal value as a report may show it: `138****8000`, `z***@example.edu`."""
    if kind == "user_id":
        return value
    if kind == "email" and "@" in value:
        local, _, domain = value.rpartition("@")
        return f"{local[:1]}***@{domain}"
    if len(value) >= 9:
        return f"{value[:3]}{'*' * (len(value) - 7)}{value[-4:]}"
    return value[:1] + "*" * (len(value) - 1)


def _rows(path: Path, fmt: str, encoding: str) -> Iterator[tuple[int, list[str] | RowError]]:
    return _xlsx_rows(path) if fmt == "xlsx" else _csv_rows(path, encoding)


def _csv_rows(path: Path, encoding: str) -> Iterator[tuple[int, list[str] | RowError]]:
    with path.open(newline="", encoding=encoding) as f:
        try:
            dialect: type[csv.Dialect] | str = csv.Sniffer().sniff(f.read(_SNIFF_BYTES), delimiters=",;\t")
        except csv.Error:
            dialect = "excel"  # one column, or nothing to tell by: commas
        f.seek(0)
        reader = csv.reader(f, dialect)
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield reader.line_num, RowError(reader.line_num, "", "", f"unreadable CSV row: {exc}")
                continue
            yield reader.line_num, cells


def _xlsx_rows(path: Path) -> Iterator[tuple[int, list[str] | RowError]]:
    from openpyxl import load_workbook  # imported here: the API starts without it otherwise

    # A file object, not the path: openpyxl refuses a path without an .xlsx suffix (a temporary file).
    with path.open("rb") as f:
        try:
            book = load_workbook(f, read_only=True, data_only=True)
        except Exception as exc:  # openpyxl raises many kinds (zip, XML, key) for a damaged file
            raise UploadRefused(f"the XLSX file cannot be opened: {type(exc).__name__}: {exc}") from None
        try:
            sheet = book.worksheets[0]
            for number, values in enumerate(sheet.iter_rows(values_only=True), start=1):
                yield number, [_cell(v) for v in values]
        finally:
            book.close()


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # a phone number typed into Excel is a number
    return str(value)


def _letter(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


def parse_kind(value: str | None) -> UploadKind | None:
    """The kind an operator gave, or UploadRefused naming the choices."""
    if value is None or value == "":
        return None
    for kind in KINDS:
        if value == kind:
            return kind
    raise UploadRefused(f"kind: must be one of {', '.join(KINDS)}, got {value[:32]!r}")


async def import_file(
    store: UploadStore, path: Path, *, app: str, kind: UploadKind | None, ttl_hours: float, filename: str,
    created_by: str, max_errors_kept: int, batch: int = 5000,
) -> Upload:
    """Read, clean and store the file at `path` as an upload of `app`. Reading and cleaning run on a
    thread a batch at a time (a million rows take a while), Redis on the caller's loop."""
    shape = await asyncio.to_thread(shape_of, path, kind)
    draft = store.begin(
        app, shape.kind, ttl_hours, filename=filename, file_format=shape.file_format,
        encoding=_ENCODING_NAMES.get(shape.encoding, shape.encoding), created_by=created_by,
        max_errors_kept=max_errors_kept,
    )
    batches = read_batches(path, shape, batch)
    while (next_batch := await asyncio.to_thread(next, batches, None)) is not None:
        await store.add(draft, next_batch.rows, next_batch.found, next_batch.errors)
    return await store.finish(draft)


_ENCODING_NAMES = {"utf-8-sig": "utf-8", "gb18030": "gbk/gb18030"}

__all__ = [
    "Batch", "FileShape", "UploadRefused", "import_file", "mask", "parse_kind", "read_batches", "shape_of",
]

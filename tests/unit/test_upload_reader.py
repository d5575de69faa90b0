"""Reading uploaded recipient lists without services: encodings, header rows, cleaning, row errors, XLSX."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from openpyxl import Workbook

from api.upload_reader import (
    UploadRefused,
    csv_encoding,
    file_format,
    mainland_mobile,
    mask,
    parse_kind,
    read_batches,
    shape_of,
)
from channels.addresses import phone
from state.uploads import RowError, recipient_of


def rows_of(path: Path, kind: str | None = None, size: int = 5000) -> tuple[int, list[str], list[RowError]]:
    shape = shape_of(path, kind)  # type: ignore[arg-type]
    rows, found, errors = 0, [], []
    for batch in read_batches(path, shape, size):
        rows += batch.rows
        found += [r.value for r in batch.found]
        errors += batch.errors
    return rows, found, errors


def test_a_phone_csv_with_a_chinese_header_is_cleaned_to_e164_with_bad_rows_named(tmp_path: Path) -> None:
    path = tmp_path / "list.csv"
    path.write_text("姓名,手机号\n王,138 0013 8000\n李,+86 139-0013-9000\n赵,12345\n\n钱,\n孙,13800138000\n",
                    encoding="utf-8")
    rows, found, errors = rows_of(path)
    assert rows == 5  # the blank line is not a row
    assert found == ["+8613800138000", "+8613900139000", "+8613800138000"]  # duplicates go to Redis
    assert [(e.row, e.column) for e in errors] == [(4, "手机号"), (6, "手机号")]
    assert errors[0].value == "1****"
    assert "12345" not in errors[0].reason and errors[1].reason == "empty phone"


def test_gbk_and_utf8_with_bom_read_the_same(tmp_path: Path) -> None:
    text = "邮箱\nZhang@Uni.Example\nnot-an-email\n"
    gbk, bom = tmp_path / "gbk.csv", tmp_path / "bom.csv"
    gbk.write_bytes(text.encode("gbk"))
    bom.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    assert csv_encoding(gbk) == "gb18030" and csv_encoding(bom) == "utf-8-sig"
    for path in (gbk, bom):
        rows, found, errors = rows_of(path)
        assert (rows, found) == (2, ["Zhang@uni.example"])
        assert [(e.row, e.column, e.value) for e in errors] == [(3, "邮箱", "not*****mail")]


def test_a_file_in_neither_encoding_is_refused_naming_both(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes(b"phone\n\x81\x20\xff\xfe\n")
    with pytest.raises(UploadRefused, match="neither UTF-8 nor GBK/GB18030"):
        csv_encoding(path)
    utf16 = tmp_path / "utf16.csv"
    utf16.write_bytes("phone\n".encode("utf-16"))
    with pytest.raises(UploadRefused, match="UTF-16"):
        csv_encoding(utf16)


def test_without_header_or_kind_the_file_is_refused_and_with_kind_column_a_is_read(tmp_path: Path) -> None:
    path = tmp_path / "plain.csv"
    path.write_text("u1\nu2\nbad id!\n")
    with pytest.raises(UploadRefused, match="give kind"):
        shape_of(path, None)
    rows, found, errors = rows_of(path, "user_id")
    assert (rows, found) == (3, ["u1", "u2"]) and [(e.row, e.column) for e in errors] == [(3, "A")]


def test_a_header_naming_two_kinds_needs_a_kind_and_a_kind_missing_from_the_header_is_named(
    tmp_path: Path,
) -> None:
    path = tmp_path / "two.csv"
    path.write_text("email,mobile\na@uni.example,13800138000\n")
    with pytest.raises(UploadRefused, match="several kinds"):
        shape_of(path, None)
    assert rows_of(path, "phone")[1] == ["+8613800138000"]
    with pytest.raises(UploadRefused, match="no user_id column"):
        shape_of(path, "user_id")


def test_xlsx_rows_are_read_with_numbers_typed_as_numbers(tmp_path: Path) -> None:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["name", "mobile"])
    sheet.append(["a", 13800138000])
    sheet.append(["b", 13900139000.0])
    sheet.append(["c", "nope"])
    path = tmp_path / "list.xlsx"
    book.save(path)
    assert file_format(path) == "xlsx"
    rows, found, errors = rows_of(path)
    assert (rows, found) == (3, ["+8613800138000", "+8613900139000"])
    assert [(e.row, e.column) for e in errors] == [(4, "mobile")]


def test_batches_are_bounded(tmp_path: Path) -> None:
    path = tmp_path / "many.csv"
    path.write_text("user_id\n" + "".join(f"u{n}\n" for n in range(25)))
    batches = list(read_batches(path, shape_of(path, None), 10))
    assert [b.rows for b in batches] == [10, 10, 5]


def test_masks_keep_only_what_identifies_the_row_to_its_owner() -> None:
    assert mask("phone", "13800138000") == "138****8000"
    assert mask("email", "zhang.wei@uni.example") == "z***@uni.example"
    assert mask("phone", "123") == "1**"
    assert mask("user_id", "s-1") == "s-1"


def test_kinds_and_members() -> None:
    assert parse_kind(None) is None and parse_kind("email") == "email"
    with pytest.raises(UploadRefused, match="one of phone, email, user_id"):
        parse_kind("fax")
    assert recipient_of("s-1") == ("s-1", None)
    assert recipient_of("addr:ab\x1fsms\x1f+8613800138000") == ("addr:ab", {"sms": "+8613800138000"})


def test_the_mobile_prefix_verdicts_answer_what_the_send_time_cleaner_answers() -> None:
    rng = random.Random(13)
    numbers = [f"1{rng.randrange(30, 100)}{rng.randrange(10**8):08d}" for _ in range(20_000)]
    numbers += [f"+86 {n[:3]}-{n[3:7]}-{n[7:]}" for n in numbers[:2000]] + ["8613800138000", "1380013800"]
    assert [mainland_mobile(n) for n in numbers] == [phone(n) for n in numbers]

"""Users import: both file shapes, per-row errors with line and field, phones, batching."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from state import users_import
from state.users import User
from state.users_import import ImportFileError, import_users

HEADER = (
    "user_id,name,timezone,locale,tags,channel_pref,email,phone,push_token,wechat_openid,"
    "wechat_mp_openid,inbox,webhook\n"
)


class RecordingDirectory:
    """Stands in for UserDirectory: keeps every upsert batch."""

    def __init__(self) -> None:
        self.batches: list[list[User]] = []

    async def upsert(self, users: Sequence[User]) -> None:
        self.batches.append(list(users))

    @property
    def users(self) -> dict[str, User]:
        return {u.user_id: u for batch in self.batches for u in batch}


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


async def test_csv_row_becomes_a_user_with_bindings(tmp_path: Path) -> None:
    path = write(tmp_path, "people.csv", HEADER + (
        "s1,王芳,Asia/Shanghai,zh-CN,student;dept-cs; year-2026 ,push,wf@stu.example.edu.cn,"
        "138 0013 8000,tok-1,oABC,oMP,yes,\n"
    ))
    directory = RecordingDirectory()
    report = await import_users(path, directory)
    assert (report.imported, report.rejected, report.errors) == (1, 0, [])
    user = directory.users["s1"]
    assert user.tags == ("student", "dept-cs", "year-2026")
    assert user.channel_pref == "push"
    assert user.bindings == {
        "email": "wf@stu.example.edu.cn", "sms": "+8613800138000", "push": "tok-1",
        "wechat_oa": "oABC", "wechat_mp": "oMP", "inbox": "s1",
    }


async def test_csv_with_only_some_columns_uses_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, "people.csv", "user_id,inbox\nu1,no\nu2,TRUE\n")
    directory = RecordingDirectory()
    report = await import_users(path, directory)
    assert report.imported == 2
    assert directory.users["u1"].bindings == {}
    assert directory.users["u2"].bindings == {"inbox": "u2"}
    assert directory.users["u1"].timezone == "Asia/Shanghai"


@pytest.mark.parametrize(
    ("row", "field", "words"),
    [
        ("u2,,,,,,not-an-email,,,,,,", "email", "not an email"),
        ("u2,,,,,,a@b@c.com,,,,,,", "email", "not an email"),
        ("u2,,,,,,a@localhost,,,,,,", "email", "not an email"),
        ("u2,,,,,,,12345,,,,,", "phone", "E.164"),
        ("u2,,,,,,,+0123456789,,,,,", "phone", "E.164"),
        ("u2,,,,,,,,,,,maybe,", "inbox", "yes/no"),
        ("u2,,Mars/Olympus,,,,,,,,,,", "timezone", "unknown timezone"),
        ("u2,,,,,pigeon,,,,,,,", "channel_pref", "Input should be"),
        ("bad id,,,,,,,,,,,,", "user_id", "pattern"),
        ("u2,,,,bad tag,,,,,,,,", "tags.0", "pattern"),
        ("u2,,,,,,,,,,,,,extra", "", "cells"),
    ],
)
async def test_bad_csv_rows_are_reported_with_line_and_field(
    tmp_path: Path, row: str, field: str, words: str
) -> None:
    path = write(tmp_path, "people.csv", HEADER + "u1,,,,,,,,,,,yes,\n" + row + "\nu3,,,,,,,,,,,,\n")
    directory = RecordingDirectory()
    report = await import_users(path, directory)
    assert (report.imported, report.rejected) == (2, 1)
    [error] = report.errors
    assert (error.line, error.field) == (3, field)
    assert words in error.message
    assert sorted(directory.users) == ["u1", "u3"]
    assert report.describe() == [f"{path}:3: {field or '(row)'}: {error.message}"]


async def test_line_numbers_count_quoted_newlines(tmp_path: Path) -> None:
    path = write(tmp_path, "people.csv", 'user_id,name\nu1,"two\nlines"\nu 2,x\n')
    report = await import_users(path, RecordingDirectory())
    assert [(e.line, e.field) for e in report.errors] == [(4, "user_id")]


async def test_unknown_columns_fail_the_file_with_a_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, "people.csv", "user_id,emial,favourite_colour\nu1,a@b.cn,red\n")
    with pytest.raises(ImportFileError, match=r"'emial' \(did you mean 'email'\?\).*'favourite_colour'"):
        await import_users(path, RecordingDirectory())


async def test_missing_user_id_column_fails_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "people.csv", "name,email\nx,a@b.cn\n")
    with pytest.raises(ImportFileError, match="user_id"):
        await import_users(path, RecordingDirectory())


async def test_unknown_extension_needs_an_explicit_format(tmp_path: Path) -> None:
    path = write(tmp_path, "people.txt", "user_id\nu1\n")
    with pytest.raises(ImportFileError, match="format="):
        await import_users(path, RecordingDirectory())
    report = await import_users(path, RecordingDirectory(), format="csv")
    assert report.imported == 1


async def test_jsonl_accepts_the_model_shape_and_the_flat_shape(tmp_path: Path) -> None:
    lines = [
        {"user_id": "m1", "tags": ["staff"], "bindings": {"sms": "13900139000", "email": "m@x.cn"}},
        {"user_id": "f1", "tags": "student;dept-math", "phone": "+44 7700 900123", "inbox": True},
        {"user_id": "f2", "email": "f2@example.org", "inbox": "no"},
    ]
    path = write(tmp_path, "people.ndjson", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    directory = RecordingDirectory()
    report = await import_users(path, directory)
    assert (report.imported, report.rejected) == (3, 0)
    assert directory.users["m1"].bindings == {"sms": "+8613900139000", "email": "m@x.cn"}
    assert directory.users["f1"].bindings == {"sms": "+447700900123", "inbox": "f1"}
    assert directory.users["f1"].tags == ("student", "dept-math")
    assert directory.users["f2"].bindings == {"email": "f2@example.org"}


@pytest.mark.parametrize(
    ("line", "field", "words"),
    [
        ('{"user_id": "x", ', "", "not valid JSON"),
        ("[1, 2]", "", "JSON object"),
        ('{"user_id": "x", "emails": "a@b.cn"}', "emails", "did you mean 'email'"),
        ('{"user_id": "x", "bindings": {"sms": "+8613800138000"}, "phone": "13800138000"}', "phone", "mixes"),
        ('{"user_id": "x", "bindings": {"sms": "555-1234"}}', "bindings.sms", "E.164"),
        ('{"user_id": "x", "bindings": {"fax": "123"}}', "bindings.fax.[key]", "Input should be"),
        ('{"user_id": "x", "bindings": "oops"}', "bindings", "expected an object"),
        ('{"name": "no id"}', "user_id", "Field required"),
    ],
)
async def test_bad_jsonl_lines_are_reported(tmp_path: Path, line: str, field: str, words: str) -> None:
    path = write(tmp_path, "people.jsonl", '{"user_id": "ok1"}\n' + line + "\n")
    report = await import_users(path, RecordingDirectory())
    assert report.imported == 1
    [error] = report.errors
    assert (error.line, error.field) == (2, field)
    assert words in error.message


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("13800138000", "+8613800138000"),
        ("138-0013-8000", "+8613800138000"),
        ("+86 138 0013 8000", "+8613800138000"),
        ("+1 (212) 555-0100", "+12125550100"),
        ("+44 20 7946 0958", "+442079460958"),
    ],
)
def test_phone_normalisation(raw: str, expected: str) -> None:
    assert users_import._e164(raw, field="phone") == expected


@pytest.mark.parametrize(
    "raw", ["12800138000", "1380013800", "020-12345678", "+86", "+1234567890123456", "abc"]
)
def test_phone_rejections(raw: str) -> None:
    with pytest.raises(users_import._RowRejected):
        users_import._e164(raw, field="phone")


async def test_rows_are_upserted_in_batches_with_progress_after_each(tmp_path: Path) -> None:
    rows = "".join(f"u{n}\n" for n in range(2 * users_import.BATCH_SIZE + 500))
    path = write(tmp_path, "people.csv", "user_id\n" + rows)
    directory = RecordingDirectory()
    seen: list[int] = []
    report = await import_users(path, directory, progress=seen.append)
    assert report.imported == 2 * users_import.BATCH_SIZE + 500
    assert [len(b) for b in directory.batches] == [users_import.BATCH_SIZE] * 2 + [500]
    # Bytes read so far, growing, and the whole file at the end.
    assert len(seen) == 3 and seen == sorted(seen) and seen[-1] == path.stat().st_size


async def test_errors_kept_are_bounded_but_all_are_counted(tmp_path: Path) -> None:
    path = write(tmp_path, "people.csv", "user_id\n" + "bad id\n" * 30)
    report = await import_users(path, RecordingDirectory(), max_errors=5)
    assert report.rejected == 30
    assert [e.line for e in report.errors] == [2, 3, 4, 5, 6]


async def test_a_cell_may_hold_several_addresses_and_jsonl_the_addresses_shape(tmp_path: Path) -> None:
    path = write(tmp_path, "people.csv", (
        "user_id,email,phone,push_token\n"
        "s1,a@uni.example; b@uni.example,13800138000,fcm:tok-phone-0123456789;fcm:tok-tablet-0123456789\n"
        "s2,a@uni.example;not an email,,\n"
    ))
    directory = RecordingDirectory()
    report = await import_users(path, directory)
    assert [(e.line, e.field) for e in report.errors] == [(3, "email")]
    user = directory.users["s1"]
    assert [a.address for a in user.addresses["email"]] == ["a@uni.example", "b@uni.example"]
    assert user.addresses["email"][0].primary and len(user.addresses["push"]) == 2
    assert user.bindings["sms"] == "+8613800138000"

    lines = write(tmp_path, "people.jsonl", json.dumps({
        "user_id": "s3", "addresses": {"sms": [{"address": "138 0013 8001", "label": "mobile"}]},
        "address_choice": {"sms": "all"}, "attributes": {"year": 2022},
    }) + "\n")
    report = await import_users(lines, directory)
    assert report.rejected == 0, report.describe()
    assert directory.users["s3"].bindings == {"sms": "+8613800138001"}
    assert directory.users["s3"].attributes == {"year": 2022}

"""Uploaded recipient lists: the cleaned, deduplicated rows of an operator's CSV or XLSX, held for a set
time, that an event names as `audience.upload`.

Redis layout, one hash tag per upload (`{up.<id>}`) so its keys live and expire together:
`sb:{up.<id>}:meta` hash (app, kind, counts, expiry...), written last, so a list whose import did not
finish is unknown; `sb:{up.<id>}:ix` sorted set of its recipients at score 0, walked in pages like a
segment (`AudienceWalk`); `sb:{up.<id>}:errors` list of its row errors (JSON), the first
`max_errors_kept`; `sb:uploads:{app}` sorted set of the app's upload ids by expiry time. Every key but
the app's list carries the upload's expiry (EXPIREAT); the app's list drops expired ids when read.

A recipient is a member of the index: a known person's user id (their consent and preferences apply),
or, for an address nobody holds, `<address id>\\x1f<channel>\\x1f<address>` (the address id is
`address_user_id`, as for `audience.addresses`): the page then carries the address itself, so
expanding a page of a million-row list costs no lookup. User ids cannot hold `\\x1f` (`Name`).
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from redis.asyncio import Redis

from records.topics import ChannelName, address_user_id
from state.users import ALL_USERS, OWNERS_KEY, AudienceIndex

UploadKind = Literal["phone", "email", "user_id"]
KINDS: tuple[UploadKind, ...] = ("phone", "email", "user_id")
CHANNEL_OF: dict[UploadKind, ChannelName | None] = {"phone": "sms", "email": "email", "user_id": None}
META_KEY = "sb:{{up.{}}}:meta"
INDEX_KEY = "sb:{{up.{}}}:ix"
ERRORS_KEY = "sb:{{up.{}}}:errors"
APP_UPLOADS = "sb:uploads:{}"
RAW = "\x1f"
DEFAULT_TTL_HOURS = 72
MAX_TTL_HOURS = 30 * 24


# ARGV: pairs of (address id + RAW, member); adds each member whose address id is not listed yet.
_ADD_RAW = """
local added = 0
for i = 1, #ARGV, 2 do
  local prefix = ARGV[i]
  local found = redis.call('ZRANGEBYLEX', KEYS[1], '[' .. prefix, '(' .. prefix .. '\\255', 'LIMIT', 0, 1)
  if #found == 0 then
    redis.call('ZADD', KEYS[1], 0, ARGV[i + 1])
    added = added + 1
  end
end
return added
"""


@dataclass(frozen=True)
class RowError:
    """One refused row: its number in the file (1 = the first line), column, value (masked where it is
    personal) and why."""

    row: int
    column: str
    value: str
    reason: str


@dataclass(frozen=True)
class Recipient:
    """A cleaned row: an address on `channel`, or a user id when `channel` is None."""

    row: int
    column: str
    value: str
    channel: ChannelName | None = None


@dataclass
class UploadCounts:
    rows: int = 0
    valid: int = 0
    invalid: int = 0
    duplicates: int = 0
    known_people: int = 0
    raw_addresses: int = 0
    errors_kept: int = 0


@dataclass(frozen=True)
class Upload:
    """A stored list: who may use it, what it holds, until when."""

    upload_id: str
    app: str
    kind: UploadKind
    filename: str
    file_format: str
    encoding: str
    created_by: str
    created_at: float
    expires_at: float
    counts: UploadCounts = field(default_factory=UploadCounts)
    removed_at: float | None = None
    removed_by: str = ""

    @property
    def recipients(self) -> int:
        return self.counts.known_people + self.counts.raw_addresses

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.upload_id, "app": self.app, "kind": self.kind, "filename": self.filename,
            "format": self.file_format, "encoding": self.encoding, "created_by": self.created_by,
            "created_at": _iso(self.created_at), "expires_at": _iso(self.expires_at),
            **asdict(self.counts), "recipients": self.recipients,
        }


@dataclass
class UploadDraft:
    """An upload being written: rows go in batch by batch (`UploadStore.add`), then `finish`."""

    upload: Upload
    max_errors_kept: int


def upload_index(upload_id: str) -> AudienceIndex:
    """The upload as an audience: its sorted set, walked by `AudienceWalk.page` (it has no plain set)."""
    return AudienceIndex((), (INDEX_KEY.format(upload_id),))


def recipient_of(member: str) -> tuple[str, dict[ChannelName, str] | None]:
    """(user id, addresses) of an index member: a raw address's pseudo id and address, or a person's id."""
    if RAW not in member:
        return member, None
    address_id, channel, address = member.split(RAW, 2)
    return address_id, {channel: address}  # type: ignore[dict-item]  # written from ChannelName only


async def upload_size(redis: Redis, upload_id: str) -> int | None:
    """How many recipients the upload reaches, or None when it expired or never existed."""
    raw = await redis.hmget(META_KEY.format(upload_id), ["known_people", "raw_addresses", "removed_at"])
    known, addresses, removed = raw
    if known is None or addresses is None or removed is not None:
        return None
    return int(known) + int(addresses)


class UploadStore:
    """Writes, reads and removes uploaded lists; the client is passed in."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._add_raw = redis.register_script(_ADD_RAW)

    def begin(
        self, app: str, kind: UploadKind, ttl_hours: float, *, filename: str, file_format: str,
        encoding: str, created_by: str, max_errors_kept: int, upload_id: str = "",
    ) -> UploadDraft:
        """A new upload (a fresh id unless one is given); nothing is written until the first batch."""
        now = time.time()
        upload = Upload(
            upload_id=upload_id or f"up-{secrets.token_hex(8)}", app=app, kind=kind, filename=filename[:200],
            file_format=file_format, encoding=encoding, created_by=created_by, created_at=now,
            expires_at=now + ttl_hours * 3600,
        )
        return UploadDraft(upload, max_errors_kept)

    async def add(
        self, draft: UploadDraft, rows: int, found: Sequence[Recipient], errors: list[RowError]
    ) -> None:
        """One batch of the file: `rows` rows read, `found` cleaned, `errors` refused. One pipeline for
        the lookups, one for the writes, whatever the batch size."""
        counts = draft.upload.counts
        upload_id = draft.upload.upload_id
        counts.rows += rows
        known, raw, unknown = await self._recipients(found)
        errors = errors + unknown
        counts.invalid += len(errors)
        valid = len(found) - len(unknown)
        counts.valid += valid
        expires = int(draft.upload.expires_at) + 1
        keep = errors[: max(0, draft.max_errors_kept - counts.errors_kept)]
        index = INDEX_KEY.format(upload_id)
        added_raw = 0
        if raw:
            # Raw addresses are one recipient per address id (case-blind), whatever their spelling.
            pairs = [part for member in raw for part in (member.split(RAW, 1)[0] + RAW, member)]
            added_raw = int(await self._add_raw(keys=[index], args=pairs))
        async with self._redis.pipeline(transaction=False) as pipe:
            if known:
                pipe.zadd(index, dict.fromkeys(known, 0))
            pipe.expireat(index, expires)
            if keep:
                key = ERRORS_KEY.format(upload_id)
                pipe.rpush(key, *(json.dumps(asdict(e), ensure_ascii=False) for e in keep))
                pipe.expireat(key, expires)
            answers = await pipe.execute()
        added_known = int(answers[0]) if known else 0
        counts.errors_kept += len(keep)
        counts.known_people += added_known
        counts.raw_addresses += added_raw
        # A row adding nobody named someone already listed (the same address, or another of theirs).
        counts.duplicates += max(0, valid - added_known - added_raw)

    async def _recipients(self, found: Sequence[Recipient]) -> tuple[list[str], list[str], list[RowError]]:
        """Members for known people and raw addresses, and the rows naming an unknown user id."""
        if not found:
            return [], [], []
        async with self._redis.pipeline(transaction=False) as pipe:
            ids = [r.value for r in found if r.channel is None]
            if ids:
                pipe.smismember(ALL_USERS, ids)
            addressed = [r for r in found if r.channel is not None]
            for r in addressed:
                pipe.smembers(OWNERS_KEY.format(address_user_id(r.channel, r.value)))  # type: ignore[arg-type]
            answers = await pipe.execute()
        known: list[str] = []
        raw: list[str] = []
        unknown: list[RowError] = []
        if ids:
            named = (r for r in found if r.channel is None)
            for recipient, exists in zip(named, answers.pop(0), strict=True):
                if exists:
                    known.append(recipient.value)
                else:
                    unknown.append(RowError(recipient.row, recipient.column, recipient.value, "unknown user"))
        for recipient, owners in zip(addressed, answers, strict=True):
            if owners:
                known.extend(sorted(_text(o) for o in owners))
            else:
                channel = recipient.channel or ""
                address_id = address_user_id(recipient.channel, recipient.value)  # type: ignore[arg-type]
                raw.append(f"{address_id}{RAW}{channel}{RAW}{recipient.value}")
        return list(dict.fromkeys(known)), list(dict.fromkeys(raw)), unknown

    async def finish(self, draft: UploadDraft) -> Upload:
        """Make the upload usable: its meta is written last, with the app's list."""
        upload = draft.upload
        meta = META_KEY.format(upload.upload_id)
        expires = int(upload.expires_at) + 1
        fields = {
            "app": upload.app, "kind": upload.kind, "filename": upload.filename, "format": upload.file_format,
            "encoding": upload.encoding, "created_by": upload.created_by,
            "created_at": repr(upload.created_at), "expires_at": repr(upload.expires_at),
            **{k: str(v) for k, v in asdict(upload.counts).items()},
        }
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hset(meta, items=[part for pair in fields.items() for part in pair])
            pipe.expireat(meta, expires)
            pipe.zadd(APP_UPLOADS.format(upload.app), {upload.upload_id: upload.expires_at})
            await pipe.execute()
        return upload

    async def size(self, upload_id: str) -> int | None:
        """`upload_size`: the recipients of a live upload, None for an unknown, expired or removed one."""
        return await upload_size(self._redis, upload_id)

    async def get(self, upload_id: str) -> Upload | None:
        """The upload, or None when it expired, was removed or never finished."""
        raw = await self._redis.hgetall(META_KEY.format(upload_id))
        return _upload(upload_id, raw) if raw else None

    async def live(self, apps: Iterable[str]) -> list[Upload]:
        """The live uploads of `apps`, newest first."""
        now = time.time()
        ids: list[str] = []
        for app in sorted(set(apps)):
            key = APP_UPLOADS.format(app)
            await self._redis.zremrangebyscore(key, "-inf", now)
            ids.extend(_texts(await self._redis.zrange(key, 0, -1)))
        async with self._redis.pipeline(transaction=False) as pipe:
            for upload_id in ids:
                pipe.hgetall(META_KEY.format(upload_id))
            raws = await pipe.execute()
        found = [_upload(upload_id, raw) for upload_id, raw in zip(ids, raws, strict=True) if raw]
        found = [u for u in found if u.removed_at is None]
        return sorted(found, key=lambda u: u.created_at, reverse=True)

    async def apps(self) -> list[str]:
        """Apps with an upload list (for listing every app's uploads)."""
        keys = [_text(k) async for k in self._redis.scan_iter(match=APP_UPLOADS.format("*"), count=1000)
                if isinstance(k, bytes | str)]
        return sorted(k.removeprefix(APP_UPLOADS.format("")) for k in keys)

    async def errors(self, upload_id: str, offset: int = 0, limit: int = 100) -> list[RowError]:
        raw = await self._redis.lrange(ERRORS_KEY.format(upload_id), offset, offset + limit - 1)
        return [RowError(**json.loads(item)) for item in raw]

    async def remove(self, upload_id: str, removed_by: str) -> Upload | None:
        """Delete the upload's rows now; returns what it was (None if there was none). Its meta stays
        until it would have expired, marked removed, so an event naming it says so, and whoever asks is
        still checked against its app. An event already expanding it stops at the next page."""
        upload = await self.get(upload_id)
        if upload is None:
            return None
        meta = META_KEY.format(upload_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(INDEX_KEY.format(upload_id), ERRORS_KEY.format(upload_id))
            pipe.hset(meta, mapping={"removed_at": repr(time.time()), "removed_by": removed_by})
            await pipe.execute()
        await self._redis.zrem(APP_UPLOADS.format(upload.app), upload_id)
        return upload


def _upload(upload_id: str, raw: Mapping[bytes | str, bytes | str]) -> Upload:
    f = {_text(k): _text(v) for k, v in raw.items()}
    counts = UploadCounts(**{name: int(f.get(name, "0")) for name in UploadCounts.__dataclass_fields__})
    kind = f.get("kind", "phone")
    return Upload(
        upload_id=upload_id, app=f.get("app", ""), kind=kind if kind in KINDS else "phone",
        filename=f.get("filename", ""), file_format=f.get("format", ""), encoding=f.get("encoding", ""),
        created_by=f.get("created_by", ""), created_at=float(f.get("created_at", "0")),
        expires_at=float(f.get("expires_at", "0")), counts=counts,
        removed_at=float(f["removed_at"]) if "removed_at" in f else None, removed_by=f.get("removed_by", ""),
    )


def _iso(moment: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


def _texts(values: list[Any]) -> list[str]:
    """Members of a ZRANGE without scores."""
    return [_text(value) for value in values]


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

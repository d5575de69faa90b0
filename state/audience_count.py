"""How many people an audience reaches, before it is sent: the count the send screen shows.

Exact for user ids and addresses (distinct ones), and for everyone or one tag (the set's size); for
several tags the sum of their sizes, an upper bound (a person with two of the tags is counted twice;
the union is taken only when the message is sent). A segment's count is a full streamed evaluation of
its definition now (`state.segments.count_segment`; seconds for a million people), an upload's is its
stored recipients (`state.uploads.upload_size`); an unknown or expired one is None.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from records.topics import Audience
from state.segments import count_segment
from state.uploads import upload_size
from state.users import ALL_USERS, TAG_KEY


@dataclass(frozen=True)
class RecipientCount:
    """`count` people (None: counted when sent); `exact` False when it is an upper bound; `how` says so."""

    count: int | None
    exact: bool
    how: str


async def recipient_count(redis: Redis, audience: Audience) -> RecipientCount:
    """The audience's size, in at most one round trip."""
    if audience.user_ids:
        return RecipientCount(len(set(audience.user_ids)), True, "distinct user ids")
    if audience.addresses:
        distinct = {(a.channel, a.address.strip().lower()) for a in audience.addresses}
        return RecipientCount(len(distinct), True, "distinct addresses")
    if audience.all:
        return RecipientCount(int(await redis.scard(ALL_USERS)), True, "everyone")
    if audience.tags:
        tags = sorted(set(audience.tags))
        async with redis.pipeline(transaction=False) as pipe:
            for tag in tags:
                pipe.scard(TAG_KEY.format(tag))
            sizes = [int(size) for size in await pipe.execute()]
        if len(tags) == 1:
            return RecipientCount(sizes[0], True, f"tag {tags[0]}")
        return RecipientCount(sum(sizes), False, f"at most: the sum of {len(tags)} tags' sizes")
    if audience.segment:
        members = await count_segment(redis, audience.segment)
        if members is None:
            return RecipientCount(None, False, f"segment {audience.segment}: unknown")
        return RecipientCount(members, True, f"segment {audience.segment}, evaluated now")
    recipients = await upload_size(redis, audience.upload or "")
    if recipients is None:
        return RecipientCount(None, False, f"upload {audience.upload}: expired or unknown")
    return RecipientCount(recipients, True, f"upload {audience.upload}")

"""Topic `erasures`: a person's data to be anonymised in ClickHouse, one record per erasure request.

The analytics service is the only ClickHouse writer, so the API (or `switchboard people erase`) clears
Redis itself and hands ClickHouse's part to the service through this topic. A record names the person
(`user_id` and the addresses they were known by, so the rows written for them can be found) until the
service has applied it; keep the topic's retention short (days) so the request does not outlive the
erasure by long. Everything written afterwards names only the `pseudonym`.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from datetime import UTC, datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from records.topics import ChannelName

ErasureMode = Literal["anonymise", "delete"]
PSEUDONYM_PREFIX = "erased:"
_LABEL = b"switchboard.erasure/1\x1f"


def pseudonym(key: bytes, user_id: str) -> str:
    """`erased:<hmac>`: the same for the same person (a second erasure, every table), and without the
    key nobody can tell whose it is. Keyed, unlike the message and address ids, which are plain hashes
    anyone holding the id could recompute."""
    digest = hmac.new(key, _LABEL + user_id.encode(), hashlib.sha256).hexdigest()[:24]
    return PSEUDONYM_PREFIX + digest


class ErasedAddress(BaseModel):
    """An address the person was known by, and the id a raw send to it was recorded under."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    channel: ChannelName
    address: str
    address_id: str


class ErasureRequest(BaseModel):
    """What the analytics service anonymises (or deletes) in every ClickHouse table."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    requested_at: AwareDatetime = Field(default_factory=lambda: datetime.now(UTC))
    user_id: str = Field(min_length=1)
    pseudonym: str = Field(pattern=r"^erased:[0-9a-f]{24}$")
    addresses: tuple[ErasedAddress, ...] = ()
    mode: ErasureMode = "anonymise"

    def identifiers(self) -> list[str]:
        """Every value a row may name the person by: the user id, the addresses and their ids."""
        found = [self.user_id]
        for item in self.addresses:
            found += [item.address, item.address_id]
        return list(dict.fromkeys(value for value in found if value))

    def row_ids(self) -> list[str]:
        """The `user_id` values of the person's rows: theirs, and their addresses' when sent to raw."""
        return list(dict.fromkeys([self.user_id, *(a.address_id for a in self.addresses)]))

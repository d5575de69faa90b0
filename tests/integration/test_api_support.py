"""Support for the links, consent and callbacks API tests (no tests here): the API on real Redis,
receipts recorded by a publisher that can play a broker that is down."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import httpx
from argon2 import PasswordHasher
from pydantic import SecretStr
from redis.asyncio import Redis

from api import ApiDeps, PublishError, create_api
from api.access import Access
from api.deps import LoadedRules
from channels.base import Channel
from channels.links import LinkSigner
from channels.templates import TemplateCatalog
from records.audit import AuditRecord
from records.conversions import Conversion
from records.plan import DeliveryPlan
from records.topics import Dispatch, EventCore, Receipt
from settings import ROOT
from state.apps import AppRegistry
from state.consent import ConsentStore
from state.inbox import Inbox
from state.operators import OperatorStore
from state.provider_messages import ProviderMessages
from state.user_tokens import UserTokenSigner
from state.users import UserDirectory

PUBLIC_URL = "https://notify.uni.example.edu"
LINK_SECRET = SecretStr("integration-link-secret-0123456789")
USER_TOKENS = UserTokenSigner(SecretStr("integration-user-token-key-0123456789abcdef"))
# Cheap parameters: the tests hash a few passwords, not measure argon2.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@dataclass
class RecordingPublisher:
    """Keeps acknowledged receipts; `down` makes it refuse like a broker that does not answer."""

    receipts: list[Receipt] = field(default_factory=list)
    audits: list[AuditRecord] = field(default_factory=list)
    down: bool = False

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def check(self) -> None:
        if self.down:
            raise PublishError("broker down")

    async def publish_event(self, key: str, value: bytes, lane: str = "bulk", signature: str = "") -> None:
        raise AssertionError("no events in these tests")

    async def publish_receipt(self, receipt: Receipt) -> None:
        if self.down:
            raise PublishError("topic 'receipts' did not acknowledge the record")
        self.receipts.append(receipt)

    async def publish_conversion(self, conversion: Conversion) -> None:
        raise AssertionError("no conversions in these tests")

    async def publish_audit(self, record: AuditRecord) -> None:
        if self.down:
            raise PublishError("topic 'audit' did not acknowledge the record")
        self.audits.append(record)


@dataclass
class Api:
    client: httpx.AsyncClient
    key: str
    publisher: RecordingPublisher
    signer: LinkSigner
    consent: ConsentStore
    inbox: Inbox
    sent: ProviderMessages
    operators: OperatorStore

    def user(self, user_id: str, app: str = "portal") -> dict[str, str]:
        """The headers of `user_id` signed in to `app`'s portal (an end-user token the app minted)."""
        return {"Authorization": f"Bearer {USER_TOKENS.mint(app, user_id, 600)[0]}"}

    async def operator(self, name: str, *grants: str) -> dict[str, str]:
        """The headers of a new operator holding `grants` (`role` over every app, or `role@app`)."""
        await self.operators.create(name, "a long enough secret", grants=grants)
        return {"Authorization": f"Bearer {await self.operators.issue_token(name)}"}


@asynccontextmanager
async def running_api(
    redis: Redis,
    providers: Mapping[str, Channel] | None = None,
    *,
    opt_in: Iterable[str] = (),
    rules: LoadedRules | None = None,
) -> AsyncIterator[Api]:
    """The API on `redis`; `opt_in`: the categories that need an opt-in (none, unless a test is about it);
    `rules`: the loaded rule files (their strategies)."""
    apps = AppRegistry(redis)
    key = await apps.register("portal", {"inbox"}, "Campus portal")
    publisher = RecordingPublisher()
    signer = LinkSigner(LINK_SECRET, PUBLIC_URL)
    consent, inbox = ConsentStore(redis, opt_in=opt_in), Inbox(redis)
    sent = ProviderMessages(redis, ttl_seconds=600)
    operators = OperatorStore(redis, hasher=FAST_HASHER)
    deps = ApiDeps(
        apps=apps,
        inbox=inbox,
        publisher=publisher,
        redis=redis,
        templates=TemplateCatalog(ROOT / "templates"),
        segments=UserDirectory(redis),
        links=signer,
        consent=consent,
        provider_messages=sent,
        access=Access(apps, operators, USER_TOKENS),
        rules=rules,
    )
    api = create_api(deps, providers)
    async with (
        api.router.lifespan_context(api),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=api), base_url=PUBLIC_URL) as client,
    ):
        yield Api(client, key, publisher, signer, consent, inbox, sent, operators)


def dispatch(channel: str = "email", category: str = "marketing", message_id: str = "m-1") -> Dispatch:
    event = EventCore(
        event_id="open-day-2026",
        app="campus",
        type="campus.open_day",
        template="campus_notice",
        category=category,
        campaign="open-day",  # type: ignore[arg-type]
    )
    return Dispatch(
        message_id=message_id,
        user_id="s2024001",
        channel=channel,
        address="li.wei@uni.example.edu",  # type: ignore[arg-type]
        event=event,
        rule_id="campus-notices",
        rule_version="v3",
        step=0,
        plan=DeliveryPlan(variant="A"),
    )


def path_of(url: str) -> str:
    assert url.startswith(PUBLIC_URL)
    return url[len(PUBLIC_URL) :]

"""The channel-account API on real Redis: operators create, switch, authorise and set secrets; the secrets
never come back, in a response, a listing, an audit record, a log line or a refusal."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from argon2 import PasswordHasher
from cryptography.fernet import Fernet
from redis.asyncio import Redis

from api import ApiDeps, create_api
from api.access import Access
from channels.accounts import AccountRoutes, CallbackProviders
from channels.base import Channel, ChannelDeps
from channels.templates import TemplateCatalog
from localparts.peers.wechat import signed_push_query, template_finish_event
from settings import ROOT
from settings.secret_box import SecretBox
from state.apps import AppRegistry
from state.auth_failures import AuthFailures, FailureLimits
from state.channel_accounts import ChannelAccounts
from state.inbox import Inbox
from state.operators import OperatorGrant, OperatorStore
from state.provider_messages import ProviderMessages
from state.users import UserDirectory
from tests.integration.test_api_support import RecordingPublisher

SECRET = "Zq7Lw2Xv9Rt4Kp8Nm3Jb6Hc1"  # no word in it: any 6 characters found anywhere are a leak
ROTATED = "Ty5Gu8Ie2Wq6Oa9Sd3Fh7Jk4"
KEY = Fernet.generate_key().decode()
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


def leaks(text: str, *secrets: str) -> list[str]:
    """Every 6-character fragment of `secrets` found in `text`."""
    return [s[i:i + 6] for s in secrets for i in range(len(s) - 5) if s[i:i + 6] in text]


class EventsPublisher(RecordingPublisher):
    """Records the events it is given too."""

    events: list[bytes]

    async def publish_event(self, key: str, value: bytes, lane: str = "bulk", signature: str = "") -> None:
        self.events.append(value)


@dataclass
class Console:
    client: httpx.AsyncClient
    publisher: EventsPublisher
    tokens: dict[str, str]

    async def call(self, who: str, method: str, path: str, body: Any = None) -> httpx.Response:
        return await self.client.request(method, path, json=body,
                                         headers={"Authorization": f"Bearer {self.tokens[who]}"})


@asynccontextmanager
async def operator_console(redis: Redis, accounts: ChannelAccounts,
                           providers: Mapping[str, Channel] | None = None,
                           reuse_operators: bool = False) -> AsyncIterator[Console]:
    """The API with three operators: `root` (administrator), `owner` (app owner of bursar), `auditor`;
    `reuse_operators`: they exist already (a second console), only new tokens are issued."""
    apps = AppRegistry(redis)
    operators = OperatorStore(redis, hasher=FAST_HASHER)
    grants: dict[str, list[OperatorGrant | str]] = {
        "root": ["administrator"],
        "owner": [OperatorGrant(role="app_owner", apps=frozenset({"bursar"}))],
        "auditor": ["auditor"],
    }
    tokens = {}
    for name, granted in grants.items():
        if not reuse_operators:
            await operators.create(name, "a long enough password 42", grants=granted)
        tokens[name] = await operators.issue_token(name)
    publisher = EventsPublisher()
    publisher.events = []
    deps = ApiDeps(
        apps=apps, inbox=Inbox(redis), publisher=publisher, redis=redis,
        templates=TemplateCatalog(ROOT / "templates"), segments=UserDirectory(redis),
        access=Access(apps, operators, None, AuthFailures(redis, FailureLimits(per_source=50,
                                                                               source_window=60))),
        channel_accounts=accounts, provider_messages=ProviderMessages(redis),
    )
    api = create_api(deps, providers)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=api, client=("192.0.2.9", 5000)),
                                 base_url="http://switchboard.test") as client:
        yield Console(client, publisher, tokens)


@pytest.fixture
async def console(redis: Redis) -> AsyncIterator[Console]:
    for name in ("bursar", "library"):
        await AppRegistry(redis).register(name, ["email"])
    async with operator_console(redis, ChannelAccounts(redis, SecretBox([KEY]), quota=2)) as opened:
        yield opened


def oa(code: str = "campus-oa", **fields: Any) -> dict[str, Any]:
    return {"code": code, "name": "校园服务号", "type": "wechat_oa", "platform": "wechat-oa",
            "settings": {"appid": "wx5f3a1c9e2b7d4086", "base_url": "http://127.0.0.1:9"},
            "secrets": {"secret": SECRET}, **fields}


async def test_a_secret_is_write_only_everywhere(console: Console, redis: Redis,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    created = await console.call("root", "POST", "/v1/channel-accounts", oa())
    assert created.status_code == 201, created.text
    shown = created.json()
    assert shown["secrets"]["secret"]["value"] == "******" and shown["secrets"]["secret"]["set"] is True
    assert shown["settings"]["appid"] == "wx5f3a1c9e2b7d4086" and shown["enabled"] is False
    base = "/v1/channel-accounts/campus-oa"
    rotated = await console.call("root", "PUT", f"{base}/secrets/secret", {"value": ROTATED})
    assert rotated.status_code == 200 and rotated.json()["set"] is True
    assert rotated.json()["value"] == "******"
    token = await console.call("root", "PUT", "/v1/channel-accounts/campus-oa/secrets/callback_token",
                               {"value": SECRET})
    assert token.status_code == 200
    listing = await console.call("auditor", "GET", "/v1/channel-accounts")
    one = await console.call("auditor", "GET", "/v1/channel-accounts/campus-oa")
    assert listing.status_code == one.status_code == 200
    assert listing.json()[0]["secrets"].keys() == {"secret", "callback_token"}
    actions = [record.action for record in console.publisher.audits]
    assert actions == ["channel.create", "channel.secret_rotate", "channel.secret_set"]
    record = console.publisher.audits[1]
    assert (record.actor, record.actor_kind, record.source, record.target) == (
        "root", "operator", "192.0.2.9", "campus-oa")
    assert record.before["secrets"]["secret"] == "******"  # type: ignore[index,call-overload]
    everything = "\n".join([
        created.text, rotated.text, token.text, listing.text, one.text, caplog.text,
        *(r.model_dump_json() for r in console.publisher.audits),
        *[f"{k!r}={await redis.get(k)!r}" async for k in redis.scan_iter(match="sb:{chacc}:account:*")],
    ])
    assert leaks(everything, SECRET, ROTATED) == []


@pytest.mark.parametrize("body", [
    oa(settings={"appid": "wx1", "secret": SECRET}),         # a secret among the settings
    {**oa(), "app_secret": SECRET},                          # a field that does not exist
    oa(secrets={"secret": [SECRET, SECRET]}),                # not text
    oa(secrets={"appsecret": SECRET}),                       # not a secret of the platform
    oa(platform="wechat-0a"),                                # unknown platform
    oa(code="Campus OA"),                                    # a bad code
])
async def test_a_refused_body_names_what_is_wrong_without_the_secret(console: Console, body: dict[str, Any],
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    answer = await console.call("root", "POST", "/v1/channel-accounts", body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"][0] == "body" and answer.json()["detail"][0]["msg"]
    assert leaks(answer.text + caplog.text, SECRET) == []
    assert console.publisher.audits == []


async def test_quota_codes_and_missing_accounts(console: Console) -> None:
    for code in ("oa-1", "oa-2"):
        assert (await console.call("root", "POST", "/v1/channel-accounts", oa(code))).status_code == 201
    full = await console.call("root", "POST", "/v1/channel-accounts", oa("oa-3"))
    assert full.status_code == 409 and "创建数量已满, 请联系商务提高上限" in full.json()["detail"]
    taken = await console.call("root", "POST", "/v1/channel-accounts", oa("oa-1", type="wechat_oa"))
    assert taken.status_code == 409
    missing = await console.call("root", "POST", "/v1/channel-accounts/nope/enable")
    assert missing.status_code == 404 and "nope" in missing.json()["detail"]
    ghost = await console.call("root", "PUT", "/v1/channel-accounts/oa-1/apps/ghost")
    assert ghost.status_code == 404 and "no app named 'ghost'" in ghost.json()["detail"]


async def test_switching_authorising_and_who_may(console: Console) -> None:
    assert (await console.call("root", "POST", "/v1/channel-accounts", oa())).status_code == 201
    # An app owner scoped to bursar: authorises bursar, not library; cannot change the account itself.
    mine = await console.call("owner", "PUT", "/v1/channel-accounts/campus-oa/apps/bursar")
    assert mine.status_code == 200
    foreign = await console.call("owner", "PUT", "/v1/channel-accounts/campus-oa/apps/library")
    assert foreign.status_code == 403 and "channels:manage on app 'library'" in foreign.json()["detail"]
    assert (await console.call("owner", "POST", "/v1/channel-accounts/campus-oa/enable")).status_code == 403
    assert (await console.call("owner", "POST", "/v1/channel-accounts", oa("other"))).status_code == 403
    assert (await console.call("auditor", "POST", "/v1/channel-accounts/campus-oa/enable")).status_code == 403
    on = await console.call("root", "POST", "/v1/channel-accounts/campus-oa/enable")
    assert on.status_code == 200 and on.json()["enabled"] is True
    await console.call("root", "PUT", "/v1/channel-accounts/campus-oa/apps/library")
    # The owner sees the account (it serves bursar) with its own apps only.
    [seen] = (await console.call("owner", "GET", "/v1/channel-accounts")).json()
    assert seen["apps"] == ["bursar"]
    assert (await console.call("root", "GET", "/v1/channel-accounts/campus-oa")).json()["apps"] == [
        "bursar", "library"]
    changed = await console.call("root", "PATCH", "/v1/channel-accounts/campus-oa",
                                 {"name": "财务处服务号", "settings": {"base_url": None, "timeout": 5},
                                  "rate": {"per_second": 20, "burst": 40}})
    assert changed.status_code == 200, changed.text
    assert changed.json()["settings"] == {"appid": "wx5f3a1c9e2b7d4086", "timeout": 5}
    assert changed.json()["rate"] == {"per_second": 20, "burst": 40}
    off = await console.call("root", "DELETE", "/v1/channel-accounts/campus-oa/apps/library")
    assert off.json()["apps"] == ["bursar"]
    assert (await console.call("root", "DELETE", "/v1/channel-accounts/campus-oa")).status_code == 204
    assert (await console.call("root", "GET", "/v1/channel-accounts/campus-oa")).status_code == 404
    assert [r.action for r in console.publisher.audits] == [
        "channel.create", "channel.authorise", "channel.enable", "channel.authorise", "channel.update",
        "channel.unauthorise", "channel.delete"]
    assert [r.app for r in console.publisher.audits][1] == "bursar"


async def test_rotate_secrets_reseals_under_the_newest_key_and_is_audited(redis: Redis) -> None:
    old = Fernet.generate_key().decode()
    async with operator_console(redis, ChannelAccounts(redis, SecretBox([old]))) as before:
        assert (await before.call("root", "POST", "/v1/channel-accounts", oa())).status_code == 201
    rotating = ChannelAccounts(redis, SecretBox([KEY, old]))
    async with operator_console(redis, rotating, reuse_operators=True) as console:
        assert (await console.call("owner", "POST", "/v1/channel-accounts/rotate-secrets")).status_code == 403
        answer = await console.call("root", "POST", "/v1/channel-accounts/rotate-secrets")
        again = await console.call("root", "POST", "/v1/channel-accounts/rotate-secrets")
    assert answer.status_code == 200 and answer.json() == {"resealed": ["campus-oa"], "unopened": {}}
    assert again.json() == {"resealed": [], "unopened": {}}
    audited = [(r.action, r.target) for r in console.publisher.audits]
    assert audited == [("channel.secrets_reseal", "campus-oa")]
    opened = await ChannelAccounts(redis, SecretBox([KEY])).secrets_of("campus-oa")  # the old key can go
    assert opened["secret"].get_secret_value() == SECRET


async def test_an_accounts_delivery_pushes_are_checked_with_its_callback_token(redis: Redis) -> None:
    accounts = ChannelAccounts(redis, SecretBox([KEY]))
    token = "Pu7Sh3To9Ke4Nv2Lq8Xw"
    async with httpx.AsyncClient() as http:
        routes = AccountRoutes(accounts, ChannelDeps(http=http, redis=redis), cache_seconds=0)
        async with operator_console(redis, accounts, CallbackProviders({}, routes)) as console:
            body = oa(secrets={"secret": SECRET, "callback_token": token}, enabled=True)
            assert (await console.call("root", "POST", "/v1/channel-accounts", body)).status_code == 201
            await routes.refresh()
            push = template_finish_event("oia2TjuEGTNoeX76QEjQNrcURxG8", "200228332")
            ok = await console.client.post("/v1/callbacks/campus-oa", params=signed_push_query(token),
                                           content=push)
            forged = await console.client.post("/v1/callbacks/campus-oa",
                                               params=signed_push_query("not-the-token"), content=push)
            await console.call("root", "POST", "/v1/channel-accounts/campus-oa/disable")
            await routes.refresh()
            gone = await console.client.post("/v1/callbacks/campus-oa", params=signed_push_query(token),
                                             content=push)
    assert ok.status_code == 200, ok.text
    assert forged.status_code == 403 and "does not match" in forged.text
    assert gone.status_code == 404
    assert leaks(ok.text + forged.text + gone.text, token, SECRET) == []


async def test_an_event_may_name_a_channel_an_account_authorises_its_app_for(console: Console,
                                                                            redis: Redis) -> None:
    key = await AppRegistry(redis).register("portal", ["email"])
    event = {"event_id": "e-1", "app": "portal", "type": "fee.due", "template": "fee_due",
             "category": "transactional", "audience": {"user_ids": ["xi"]}, "channels": ["wechat_oa"],
             "data": {"amount": "¥5,000", "due_date": "2026-12-01", "term": "2026秋"}}
    headers = {"Authorization": f"Bearer {key}"}
    refused = await console.client.post("/v1/events", json=event, headers=headers)
    assert refused.status_code == 403 and "not authorised for channel(s) wechat_oa" in refused.text
    await console.call("root", "POST", "/v1/channel-accounts", oa(enabled=True))
    await console.call("root", "PUT", "/v1/channel-accounts/campus-oa/apps/portal")
    accepted = await console.client.post("/v1/events", json=event, headers=headers)
    assert accepted.status_code == 202, accepted.text
    assert len(console.publisher.events) == 1

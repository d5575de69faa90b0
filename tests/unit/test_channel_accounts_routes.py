"""Channel accounts as routes, with the accounts faked: which options are secrets, what an account's
settings may hold, which app may use which route, and the channels a worker offers as accounts come."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet

from channels.accounts import AccountAwareChain, AccountRoutes, ChannelBook, check_account, secret_fields
from channels.base import ChannelDeps, PermanentSendError
from channels.failover import Rate, Route
from channels.kinds import adapter_for
from channels.sms_gateway import HttpSmsGateway, HttpSmsGatewayOptions
from channels.templates import RenderedMessage
from records.topics import Dispatch, EventCore
from settings.secret_box import SecretBox
from state.channel_accounts import AccountRate, ChannelAccount, LiveAccount

BOX = SecretBox([Fernet.generate_key().decode()])
HTTP = httpx.AsyncClient()
DEPS = ChannelDeps(http=HTTP, redis=None)  # type: ignore[arg-type]  # no adapter here reaches Redis


class FakeAccounts:
    """What AccountRoutes reads: `live()`, the enabled accounts."""

    def __init__(self) -> None:
        self.accounts: list[ChannelAccount] = []
        self.secret = "gateway-secret-1"

    async def live(self) -> list[LiveAccount]:
        return [LiveAccount(a, {"secret": BOX.seal(self.secret)}, BOX) for a in self.accounts if a.enabled]


def account(code: str, apps: set[str], *, enabled: bool = True, revision: int = 1) -> ChannelAccount:
    now = datetime.now(UTC)
    return ChannelAccount(code=code, name=code, type="sms", platform="http-sms",
                          settings={"url": "http://127.0.0.1:9/sms"}, enabled=enabled, apps=frozenset(apps),
                          created_at=now, created_by="t", updated_at=now, updated_by="t", revision=revision)


def dispatch(app: str) -> Dispatch:
    return Dispatch(message_id="m1", user_id="u1", channel="sms", address="+447700900123",
                    event=EventCore(event_id="e1", app=app, type="t", template="t", category="notice"),
                    rule_id="r", rule_version="1")


def routes(fake: FakeAccounts, cache_seconds: float = 0.0, **kwargs: Any) -> AccountRoutes:
    return AccountRoutes(fake, DEPS, cache_seconds, **kwargs)  # type: ignore[arg-type]


def test_the_secrets_of_a_platform_are_its_secretstr_options() -> None:
    assert secret_fields(adapter_for("wechat-oa")) == {"secret", "callback_token"}
    assert secret_fields(adapter_for("aliyun")) == {"access_key_secret", "callback_token"}
    assert secret_fields(adapter_for("http-sms")) == {"secret"}


@pytest.mark.parametrize(("kind", "platform", "settings", "secrets", "problem"), [
    ("wechat_oa", "aliyun", {}, [], "platform: 'aliyun' is a sms provider, not wechat_oa"),
    ("sms", "aliyn", {}, [], "platform: unknown provider kind 'aliyn'"),
    ("sms", "aliyun", {"access_key_secret": "x"}, [], "settings.access_key_secret: a secret"),
    ("sms", "aliyun", {"signname": "x"}, [], "settings.signname: unknown for aliyun (known: access_key_id"),
    ("sms", "aliyun", {}, ["sign_name"], "secrets.sign_name: not a secret of aliyun"),
])
def test_an_account_is_checked_against_its_platform(kind: str, platform: str, settings: dict[str, Any],
                                                    secrets: list[str], problem: str) -> None:
    problems = check_account(kind, platform, settings, secrets)
    assert len(problems) == 1 and problems[0].startswith(problem), problems
    assert "x" not in problems[0].split(":")[-1].split()  # a value is never quoted


async def test_an_app_uses_the_file_routes_and_only_the_accounts_that_authorise_it() -> None:
    fake = FakeAccounts()
    fake.accounts = [account("bursar-sms", {"bursar"}), account("off-sms", {"bursar"}, enabled=False)]
    live = routes(fake)
    fixed = Route("file-gw", HttpSmsGateway(HttpSmsGatewayOptions.model_validate(
        {"url": "http://127.0.0.1:9/", "secret": "s"}), HTTP))
    chain = AccountAwareChain("sms", [fixed], live, limiter=None)  # type: ignore[arg-type]
    await live.refresh()
    assert [r.name for r in chain.routes_for("bursar")] == ["file-gw", "bursar-sms"]
    assert [r.name for r in chain.routes_for("library")] == ["file-gw"]
    built = live.latest["bursar-sms"].route.adapter
    assert isinstance(built, HttpSmsGateway) and "gateway-secret-1" not in repr(built)


async def test_without_an_authorised_route_the_send_fails_naming_why() -> None:
    fake = FakeAccounts()
    fake.accounts = [account("bursar-sms", {"bursar"})]
    live = routes(fake)
    chain = AccountAwareChain("sms", [], live, limiter=None)  # type: ignore[arg-type]
    message = RenderedMessage(template="t", channel="sms", text="hi")
    with pytest.raises(PermanentSendError, match=r"no sms provider that app 'library' may send through "
                                                 r"\(bursar-sms not authorised for app 'library'\)"):
        await chain.send(message, "+447700900123", dispatch("library"))
    fake.accounts = []
    with pytest.raises(PermanentSendError, match=r"\(no enabled account\)"):
        await chain.send(message, "+447700900123", dispatch("bursar"))


async def test_an_adapter_is_built_again_only_when_its_account_changed() -> None:
    fake = FakeAccounts()
    fake.accounts = [account("a", {"x"}).model_copy(update={"rate": AccountRate(per_second=5, burst=10),
                                                            "priority": 3, "cost_per_message": 0.04})]
    live = routes(fake)
    route = (await live.refresh())["a"].route
    assert (route.rate, route.priority, route.cost_per_message) == (Rate(5, 10), 3, 0.04)
    first = route.adapter
    assert (await live.refresh())["a"].route.adapter is first
    fake.accounts, fake.secret = [account("a", {"x"}, revision=2)], "gateway-secret-2"
    assert (await live.refresh())["a"].route.adapter is not first


async def test_a_broken_or_shadowing_account_is_left_out_and_logged_without_its_secret(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeAccounts()
    broken = account("broken", {"x"}).model_copy(update={"settings": {}})  # no url: the adapter refuses
    fake.accounts = [broken, account("file-gw", {"x"}), account("fine", {"x"})]
    live = routes(fake, reserved=frozenset({"file-gw"}))
    assert set(await live.refresh()) == {"fine"}
    assert "channel account broken left out" in caplog.text and "url" in caplog.text
    assert "channel account file-gw left out" in caplog.text and "providers file" in caplog.text
    assert "gateway-secret-1" not in caplog.text


async def test_the_workers_channels_follow_the_enabled_accounts() -> None:
    fake = FakeAccounts()
    live = routes(fake)
    chain = AccountAwareChain("sms", [], live, limiter=None)  # type: ignore[arg-type]
    book = ChannelBook({"email": object()}, [chain], live)  # type: ignore[dict-item]
    available = book.keys()
    assert set(available) == {"email"} and "sms" not in book
    fake.accounts = [account("a", {"x"})]
    await book.refresh()
    assert set(available) == {"email", "sms"} and book["sms"] is chain
    fake.accounts = [account("a", {"x"}, enabled=False)]
    await book.refresh()
    assert "sms" not in available

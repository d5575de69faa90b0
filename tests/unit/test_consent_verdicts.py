"""How consent refusals read on receipts, and the settings of opt-in, without services."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from processors.decide import _suppressed_reason
from settings import Settings
from state.consent import ConsentStore, ConsentVerdict

NO_OPT_IN = ConsentVerdict("no opt-in for marketing", "opt_in")
TESTING = ConsentVerdict("test mode: not whitelisted", "test_mode")
BLACKLISTED = ConsentVerdict("blacklisted: complaint", "blacklist")


@pytest.mark.parametrize(
    ("verdicts", "reason"),
    [
        # A person-wide reason is said once, not per channel.
        ({"email": NO_OPT_IN, "sms": NO_OPT_IN}, "consent: no opt-in for marketing"),
        ({"inbox": TESTING, "email": TESTING}, "test mode: not whitelisted"),
        # Channel reasons keep their channel, as before.
        ({"sms": BLACKLISTED}, "consent: sms: blacklisted: complaint"),
        ({"email": NO_OPT_IN, "sms": BLACKLISTED},
         "consent: email: no opt-in for marketing; sms: blacklisted: complaint"),
    ],
)
def test_a_suppressed_delivery_says_why_once(verdicts: dict[str, ConsentVerdict], reason: str) -> None:
    assert _suppressed_reason(verdicts) == reason


def test_a_dispatch_refusal_reads_as_consent_except_test_mode() -> None:
    assert NO_OPT_IN.reason == "consent: no opt-in for marketing"
    assert TESTING.reason == "test mode: not whitelisted"
    assert ConsentVerdict().refused is None and not ConsentVerdict().whitelisted


def test_opt_in_categories_are_checked_when_the_store_is_made() -> None:
    redis = Redis()  # never connected: the store only registers its script here
    assert ConsentStore(redis).opt_in_categories == frozenset({"marketing"})
    with pytest.raises(ValueError, match=r"\['promo'\] are not categories; known: verification"):
        ConsentStore(redis, opt_in=["promo"])


def test_the_settings_default_to_marketing_needing_an_opt_in(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWITCHBOARD_CONSENT_OPT_IN", raising=False)
    monkeypatch.delenv("SWITCHBOARD_TEST_MODE", raising=False)
    defaults = Settings()
    assert (defaults.consent_opt_in, defaults.test_mode) == (["marketing"], False)
    monkeypatch.setenv("SWITCHBOARD_CONSENT_OPT_IN", '["marketing", "notice"]')
    monkeypatch.setenv("SWITCHBOARD_TEST_MODE", "true")
    changed = Settings()
    assert (changed.consent_opt_in, changed.test_mode) == (["marketing", "notice"], True)

"""Signed links: tokens round-trip, forged or altered ones are refused, targets are never unsafe."""

from __future__ import annotations

import base64
import json
from urllib.parse import urlsplit

import pytest
from pydantic import SecretStr

from channels.links import LinkClaims, LinkRejected, LinkSigner, safe_target, track_links
from channels.templates import RenderedMessage
from records.plan import DeliveryPlan
from records.topics import Dispatch, EventCore

SECRET = SecretStr("a-long-random-link-secret-for-tests")
DISPATCH = Dispatch(
    message_id="5f0c2a9e41b7d3c8a6e19f20", user_id="s2024001", channel="email",
    address="li.wei@uni.example.edu",
    event=EventCore(event_id="fee-2026-autumn", app="bursar", type="fee.due", template="fee_due",
                    category="marketing", campaign="autumn-fees"),
    rule_id="fees", rule_version="v7", step=2, plan=DeliveryPlan(variant="B"),
)


@pytest.fixture
def signer() -> LinkSigner:
    return LinkSigner(SECRET, "https://notify.uni.example.edu/")


def token_of(url: str, prefix: str) -> str:
    path = urlsplit(url).path
    assert path.startswith(prefix)
    return path[len(prefix):].removesuffix(".gif")


def test_each_kind_round_trips_with_every_claim(signer: LinkSigner) -> None:
    opened = signer.verify("open", token_of(signer.open_pixel_url(DISPATCH), "/t/o/"))
    assert opened == LinkClaims(
        message_id="5f0c2a9e41b7d3c8a6e19f20", user_id="s2024001", channel="email", category="marketing",
        app="bursar", event_id="fee-2026-autumn", template="fee_due", step=2, variant="B",
        campaign="autumn-fees", rule_id="fees", rule_version="v7",
    )
    click_url = signer.click_url(DISPATCH, "https://pay.example.edu/?a=1&b=2")
    clicked = signer.verify("click", token_of(click_url, "/t/c/"))
    assert clicked.target == "https://pay.example.edu/?a=1&b=2"
    unsubscribe = signer.verify("unsubscribe", token_of(signer.unsubscribe_url(DISPATCH), "/u/"))
    assert unsubscribe.user_id == "s2024001"


def test_urls_are_under_the_public_url(signer: LinkSigner) -> None:
    assert signer.open_pixel_url(DISPATCH).startswith("https://notify.uni.example.edu/t/o/")
    assert signer.open_pixel_url(DISPATCH).endswith(".gif")
    assert signer.unsubscribe_url(DISPATCH).startswith("https://notify.uni.example.edu/u/")
    assert len(signer.unsubscribe_url(DISPATCH)) < 300


def test_the_receipt_names_the_message_like_its_send(signer: LinkSigner) -> None:
    claims = signer.verify("open", token_of(signer.open_pixel_url(DISPATCH), "/t/o/"))
    receipt = claims.receipt("opened", provider="link")
    assert (receipt.message_id, receipt.status, receipt.channel, receipt.variant, receipt.step) == (
        DISPATCH.message_id, "opened", "email", "B", 2,
    )
    assert (receipt.campaign, receipt.rule_id, receipt.rule_version, receipt.template) == (
        "autumn-fees", "fees", "v7", "fee_due",
    )


def _flip(token: str, index: int) -> str:
    char = token[index]
    return token[:index] + ("A" if char != "A" else "B") + token[index + 1:]


def _unsubscribe(signer: LinkSigner) -> str:
    return signer.token("unsubscribe", LinkClaims.of(DISPATCH))


def _forged_payload(signer: LinkSigner) -> str:
    good = signer.token("unsubscribe", LinkClaims.of(DISPATCH))
    payload, mac = good.split(".")
    fields = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    fields[2] = "someone-else"
    forged = base64.urlsafe_b64encode(json.dumps(fields).encode()).rstrip(b"=").decode()
    return f"{forged}.{mac}"


@pytest.mark.parametrize(
    ("kind", "make", "reason"),
    [
        ("unsubscribe", lambda s: _flip(_unsubscribe(s), 5), "does not match"),
        ("unsubscribe", lambda s: _flip(_unsubscribe(s), -3), "does not match"),
        ("unsubscribe", _forged_payload, "does not match"),
        ("unsubscribe", lambda s: s.token("open", LinkClaims.of(DISPATCH)), "not a unsubscribe link"),
        ("unsubscribe", lambda s: LinkSigner(SecretStr("another-secret-of-enough-length"), "https://x.example")
         .token("unsubscribe", LinkClaims.of(DISPATCH)), "does not match"),
        ("open", lambda s: "nodot", "malformed"),
        ("open", lambda s: "!!!.???", "malformed"),
        ("open", lambda s: s.token("open", LinkClaims.of(DISPATCH)).replace(".", ".!"), "malformed"),
        ("open", lambda s: "a" * 5000, "longer than"),
        ("click", lambda s: s.token("click", LinkClaims.of(DISPATCH, "javascript:alert(1)")), "click target"),
    ],
)
def test_forged_altered_or_misused_tokens_are_refused(
    signer: LinkSigner, kind: str, make: object, reason: str
) -> None:
    token = make(signer)  # type: ignore[operator]
    with pytest.raises(LinkRejected, match=reason):
        signer.verify(kind, token)  # type: ignore[arg-type]


def test_a_previous_secret_still_verifies_after_rotation() -> None:
    old = LinkSigner(SecretStr("the-old-secret-still-in-inboxes"), "https://n.example")
    token = old.token("open", LinkClaims.of(DISPATCH))
    rotated = LinkSigner(SECRET, "https://n.example", previous=[SecretStr("the-old-secret-still-in-inboxes")])
    assert rotated.verify("open", token).message_id == DISPATCH.message_id
    assert old.token("open", LinkClaims.of(DISPATCH)) != rotated.token("open", LinkClaims.of(DISPATCH))


@pytest.mark.parametrize(
    ("target", "safe"),
    [
        ("https://pay.example.edu/x", True), ("http://a.example", True), ("/portal/finance", True),
        ("javascript:alert(1)", False), ("JavaScript:alert(1)", False), ("data:text/html,x", False),
        ("//evil.example/x", False), ("/\\evil.example", False), ("https:///nohost", False),
        ("mailto:a@b.edu", False), ("portal/x", False), ("", False), ("/a\r\nSet-Cookie: x=1", False),
    ],
)
def test_click_targets_must_be_web_links(signer: LinkSigner, target: str, safe: bool) -> None:
    assert safe_target(target) is safe
    if not safe:
        with pytest.raises(ValueError, match="click target must be"):
            signer.click_url(DISPATCH, target)


def test_signer_fails_fast_and_never_shows_its_secret() -> None:
    with pytest.raises(ValueError, match="at least 16 bytes"):
        LinkSigner(SecretStr("short"), "https://n.example")
    with pytest.raises(ValueError, match="public_url must be an http"):
        LinkSigner(SECRET, "notify.example")
    signer = LinkSigner(SECRET, "https://n.example")
    assert SECRET.get_secret_value() not in repr(signer)
    assert SECRET.get_secret_value() not in str(vars(signer))


def test_track_links_rewrites_web_links_and_adds_a_pixel(signer: LinkSigner) -> None:
    message = RenderedMessage(
        template="fee_due", channel="email", subject="s", text="t",
        html='<html><body><p><a class="b" href="https://pay.example.edu/?a=1&amp;b=2">Pay</a> '
             "<a href='mailto:finance@uni.example.edu'>mail</a> <a href=\"#top\">top</a></p></body></html>",
    )
    tracked = track_links(message, DISPATCH, signer)
    assert tracked.html is not None
    assert "https://pay.example.edu" not in tracked.html
    assert "href='mailto:finance@uni.example.edu'" in tracked.html and 'href="#top"' in tracked.html
    href = tracked.html.split('class="b" href="')[1].split('"')[0]
    claims = signer.verify("click", token_of(href, "/t/c/"))
    assert claims.target == "https://pay.example.edu/?a=1&b=2"  # the HTML entity was read, not signed
    assert tracked.html.index('<img src="https://notify.uni.example.edu/t/o/') < tracked.html.index("</body>")
    assert tracked.text == "t"


@pytest.mark.parametrize(
    ("channel", "link", "rewritten"),
    [("inbox", "/portal/finance", True), ("push", "https://a.example/x", True),
     ("robot", "https://a.example/x", True), ("wechat_oa", "https://a.example/x", True),
     ("sms", "https://a.example/x", False), ("push", "", False)],
)
def test_track_links_rewrites_the_link_of_channels_that_show_one(
    signer: LinkSigner, channel: str, link: str, rewritten: bool
) -> None:
    message = RenderedMessage(template="t", channel=channel, title="x", body="y", link=link)
    tracked = track_links(message, DISPATCH, signer)
    if rewritten:
        assert signer.verify("click", token_of(tracked.link, "/t/c/")).target == link
    else:
        assert tracked is message

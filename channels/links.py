"""Signed links: open pixel, click redirect and one-click unsubscribe, each a compact HMAC token.

A token is `base64url(payload).base64url(mac)`: the payload is a JSON array naming the message
(ids, channel, category, template, step, variant...) and, for clicks, the target; the MAC is
HMAC-SHA256 over the link kind and the payload, cut to 128 bits, compared in constant time.
The kind is signed too, so an open-pixel token cannot be replayed as an unsubscribe.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import html
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import SecretStr

from channels.templates import RenderedMessage
from records.topics import Dispatch, Receipt
from records.vocabulary import Status
from settings.link_secret import PUBLISHED as PUBLISHED_LINK_SECRETS

LinkKind = Literal["open", "click", "unsubscribe"]
VERSION = 1
MAC_BYTES = 16
MAX_TOKEN = 4096  # a URL longer than this is cut by some mail clients anyway
# Channels whose `link` a person follows from the message itself (WeChat mini-program pages and
# SMS are left alone: pages are not URLs, and a long tracking URL would cost an SMS segment).
LINK_CHANNELS = frozenset({"inbox", "push", "robot", "wechat_oa"})
_HREF = re.compile(r"""(<a\b[^>]*?\bhref\s*=\s*)(["'])(.*?)\2""", re.IGNORECASE | re.DOTALL)
_BODY_END = re.compile(r"</body\s*>", re.IGNORECASE)


class LinkRejected(ValueError):
    """A token that is malformed, forged, altered or of another kind; the API answers 4xx."""


@dataclass(frozen=True)
class LinkClaims:
    """What a verified token says about the message it was made for."""

    message_id: str
    user_id: str
    channel: str
    category: str
    app: str
    event_id: str
    template: str
    step: int
    variant: str
    campaign: str
    rule_id: str
    rule_version: str
    target: str = ""

    @classmethod
    def of(cls, dispatch: Dispatch, target: str = "") -> LinkClaims:
        event = dispatch.event
        return cls(
            message_id=dispatch.message_id,
            user_id=dispatch.user_id,
            channel=dispatch.channel,
            category=event.category,
            app=event.app,
            event_id=event.event_id,
            template=dispatch.template or event.template,
            step=dispatch.step,
            variant=dispatch.plan.variant,
            campaign=event.campaign,
            rule_id=dispatch.rule_id,
            rule_version=dispatch.rule_version,
            target=target,
        )

    def receipt(self, status: Status, **fields: Any) -> Receipt:
        """The `opened` or `clicked` transition of the message, named like its send."""
        known = {
            "message_id": self.message_id, "event_id": self.event_id, "app": self.app,
            "user_id": self.user_id, "channel": self.channel, "template": self.template,
            "campaign": self.campaign, "rule_id": self.rule_id, "rule_version": self.rule_version,
            "variant": self.variant, "step": self.step,
        }
        return Receipt.model_validate({**known, "status": status, **fields})


def safe_target(target: str) -> bool:
    """True for an http(s) URL with a host or a site-relative path: never `javascript:` or `//host`."""
    if not target or any(c in target for c in "\r\n\t\\"):
        return False
    parts = urlsplit(target)
    if parts.scheme in ("http", "https"):
        return bool(parts.hostname)
    return not parts.scheme and not parts.netloc and target.startswith("/") and not target.startswith("//")


_CLAIM_FIELDS = tuple(field.name for field in fields(LinkClaims))


class LinkSigner:
    """Makes and verifies link tokens. `previous` secrets still verify, so keys rotate without
    breaking links already in inboxes."""

    def __init__(self, secret: SecretStr, public_url: str, previous: Sequence[SecretStr] = ()) -> None:
        key = secret.get_secret_value().encode()
        if len(key) < 16:
            raise ValueError("link secret must be at least 16 bytes (set SWITCHBOARD_LINK_SECRET)")
        if key.decode(errors="replace") in PUBLISHED_LINK_SECRETS:
            raise ValueError("link secret is a published development value: anyone could forge links")
        parts = urlsplit(public_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"public_url must be an http(s) URL, got {public_url!r}")
        # Keyed HMAC states, copied per use: faster, and no attribute holds the key itself.
        self._keys = [
            hmac.new(k, digestmod=hashlib.sha256)
            for k in (key, *(p.get_secret_value().encode() for p in previous))
        ]
        self.public_url = public_url.rstrip("/")

    def __repr__(self) -> str:
        return f"LinkSigner(public_url={self.public_url!r}, secret=SecretStr('**********'))"

    def open_pixel_url(self, dispatch: Dispatch) -> str:
        return f"{self.public_url}/t/o/{self.token('open', LinkClaims.of(dispatch))}.gif"

    def click_url(self, dispatch: Dispatch, target: str) -> str:
        """A redirect through the API to `target`, which must be http(s) or a site path."""
        if not safe_target(target):
            raise ValueError(f"click target must be an http(s) URL or a path starting with /, got {target!r}")
        return f"{self.public_url}/t/c/{self.token('click', LinkClaims.of(dispatch, target))}"

    def unsubscribe_url(self, dispatch: Dispatch) -> str:
        return f"{self.public_url}/u/{self.token('unsubscribe', LinkClaims.of(dispatch))}"

    def absolute(self, target: str) -> str:
        """A site-relative target as a URL under `public_url`; absolute ones unchanged."""
        return f"{self.public_url}{target}" if target.startswith("/") else target

    def token(self, kind: LinkKind, claims: LinkClaims) -> str:
        # The fields in order, as astuple gave them, without its deep copy (~10 µs a token).
        values = [getattr(claims, name) for name in _CLAIM_FIELDS]
        payload = json.dumps([VERSION, *values], separators=(",", ":"), ensure_ascii=False).encode()
        return f"{_b64(payload)}.{_b64(self._mac(self._keys[0], kind, payload))}"

    def verify(self, kind: LinkKind, token: str) -> LinkClaims:
        """The claims of a token this signer made for `kind`; LinkRejected otherwise."""
        if len(token) > MAX_TOKEN:
            raise LinkRejected(f"link token longer than {MAX_TOKEN} characters")
        encoded, dot, mac = token.partition(".")
        try:
            payload, given = _unb64(encoded), _unb64(mac)
        except (binascii.Error, ValueError):
            raise LinkRejected("malformed link token") from None
        if not dot or not payload:
            raise LinkRejected("malformed link token")
        # Every key is tried, without stopping early, so timing does not tell which one matched.
        matched = [hmac.compare_digest(self._mac(key, kind, payload), given) for key in self._keys]
        if not any(matched):
            raise LinkRejected(f"link signature does not match (forged, altered, or not a {kind} link)")
        try:
            version, *fields = json.loads(payload)
            claims = LinkClaims(*fields)
        except (ValueError, TypeError):
            raise LinkRejected("link token payload is not readable") from None
        if version != VERSION:
            raise LinkRejected(f"link token version {version!r} is not supported")
        if kind == "click" and not safe_target(claims.target):
            raise LinkRejected("click target is not an http(s) URL or a site path")
        return claims

    @staticmethod
    def _mac(key: hmac.HMAC, kind: str, payload: bytes) -> bytes:
        mac = key.copy()
        mac.update(kind.encode() + b"\x00" + payload)
        return mac.digest()[:MAC_BYTES]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    if not text.isascii():
        raise ValueError("not base64url")
    return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)


def track_links(message: RenderedMessage, dispatch: Dispatch, signer: LinkSigner) -> RenderedMessage:
    """The message with its links going through signed click redirects and, for HTML email, an
    open pixel; call once per send, after rendering and content checks."""
    update: dict[str, object] = {}
    if message.html:
        tracked = _HREF.sub(lambda m: _tracked_href(m, dispatch, signer), message.html)
        pixel = (
            f'<img src="{html.escape(signer.open_pixel_url(dispatch))}" width="1" height="1" alt="" '
            'style="display:block;border:0;width:1px;height:1px">'
        )
        end = _BODY_END.search(tracked)
        update["html"] = f"{tracked[:end.start()]}{pixel}{tracked[end.start():]}" if end else tracked + pixel
    if message.link and message.channel in LINK_CHANNELS and safe_target(message.link):
        update["link"] = signer.click_url(dispatch, message.link)
    return message.model_copy(update=update) if update else message


def _tracked_href(match: re.Match[str], dispatch: Dispatch, signer: LinkSigner) -> str:
    prefix, quote, raw = match.group(1), match.group(2), match.group(3)
    target = html.unescape(raw).strip()
    # mailto:, tel:, #anchors and anything odd keep their href: only web links are redirected.
    if not safe_target(target):
        return match.group(0)
    return f"{prefix}{quote}{html.escape(signer.click_url(dispatch, target))}{quote}"

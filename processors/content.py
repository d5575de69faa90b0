"""What Send checks and changes in each outgoing message besides consent and caps.

The address is cleaned first (E.164 phones, validated emails, push-token shape), so a bad address is
suppressed with its reason instead of reaching a provider; then the rendered message is screened for
sensitive words (blocked, or masked) and its links are routed through signed click tracking.
"""

from __future__ import annotations

from dataclasses import dataclass

from channels.addresses import AddressRefused, clean
from channels.links import LinkSigner, track_links
from channels.sensitive import SensitiveWords
from channels.templates import RenderedMessage
from records.topics import Dispatch


@dataclass(frozen=True)
class Refused:
    """Why a dispatch is not sent; the text goes into its `suppressed` receipt."""

    reason: str


class ContentGuard:
    """Address cleaning, sensitive-word screening and link tracking; each part optional."""

    def __init__(
        self,
        words: SensitiveWords | None = None,
        links: LinkSigner | None = None,
        default_region: str = "CN",
    ) -> None:
        self._words = words
        self._links = links
        self._region = default_region

    def address(self, dispatch: Dispatch) -> Dispatch | Refused:
        """The dispatch with its address in canonical form, or why the address cannot be used."""
        if dispatch.channel == "inbox" and not dispatch.address:
            return dispatch  # the inbox falls back to the dispatch's user id
        cleaned = clean(dispatch.channel, dispatch.address, self._region)
        if isinstance(cleaned, AddressRefused):
            return Refused(f"address: {cleaned.reason}")
        if cleaned.value == dispatch.address:
            return dispatch
        return dispatch.model_copy(update={"address": cleaned.value})

    def message(self, message: RenderedMessage, dispatch: Dispatch) -> RenderedMessage | Refused:
        """The message as it may go out (masked, links tracked), or why it must not."""
        if self._words is not None:
            screened = self._words.screen(message)
            if screened.blocked_reason is not None:
                return Refused(f"content: {screened.blocked_reason}")
            message = screened.message
        if self._links is not None:
            message = track_links(message, dispatch, self._links)
        return message

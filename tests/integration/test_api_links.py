"""Open pixel, click redirect and one-click unsubscribe through the API, on real Redis."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from api.links import PIXEL
from api.server import RedactedAccessLog
from state.consent import ConsentQuery
from state.inbox import InboxMessage
from tests.integration.moments import now
from tests.integration.test_api_support import Api, dispatch, path_of, running_api


@pytest.fixture
async def api(redis: Redis) -> AsyncIterator[Api]:
    async with running_api(redis) as running:
        yield running


async def test_the_open_pixel_is_a_gif_and_an_opened_receipt(api: Api) -> None:
    answer = await api.client.get(path_of(api.signer.open_pixel_url(dispatch())))
    assert answer.status_code == 200
    assert (answer.headers["content-type"], answer.content) == ("image/gif", PIXEL)
    assert "no-store" in answer.headers["cache-control"]
    [receipt] = api.publisher.receipts
    assert (receipt.status, receipt.message_id, receipt.channel, receipt.variant, receipt.provider) == (
        "opened",
        "m-1",
        "email",
        "A",
        "link",
    )
    assert (receipt.campaign, receipt.rule_id, receipt.rule_version, receipt.user_id) == (
        "open-day",
        "campus-notices",
        "v3",
        "s2024001",
    )


@pytest.mark.parametrize(
    ("target", "location"),
    [
        (
            "https://www.uni.example.edu/open-day?from=mail&x=1",
            "https://www.uni.example.edu/open-day?from=mail&x=1",
        ),
        ("/portal/open-day", "https://notify.uni.example.edu/portal/open-day"),
    ],
)
async def test_a_click_redirects_to_its_target_and_records_clicked(
    api: Api, target: str, location: str
) -> None:
    answer = await api.client.get(path_of(api.signer.click_url(dispatch(), target)))
    assert answer.status_code == 302
    assert answer.headers["location"] == location
    assert answer.headers["referrer-policy"] == "no-referrer"
    assert [r.status for r in api.publisher.receipts] == ["clicked"]


async def test_an_inbox_click_marks_the_inbox_and_counts_once(api: Api) -> None:
    await api.inbox.add(
        "s2024001",
        InboxMessage(
            message_id="m-1",
            title="Open day",
            body="Come",
            link="/portal/open-day",
            app="campus",
            event_id="open-day-2026",
            template="campus_notice",
            category="notice",
            created_at=now(),
        ),
    )
    url = path_of(api.signer.click_url(dispatch("inbox"), "/portal/open-day"))
    for _ in range(2):
        assert (await api.client.get(url)).status_code == 302
    assert [r.status for r in api.publisher.receipts] == ["clicked"]
    stored = await api.inbox.get("s2024001", "m-1")
    assert stored is not None and stored.clicked_at is not None and stored.read_at is not None
    assert await api.inbox.unread_count("s2024001") == 0


def _altered(url: str) -> str:
    head, mac = url.rsplit(".", 1)
    return f"{head}.{'A' if mac[0] != 'A' else 'B'}{mac[1:]}"


@pytest.mark.parametrize("kind", ["open", "click"])
async def test_forged_tracking_links_are_refused_without_redirect(api: Api, kind: str) -> None:
    good = (
        api.signer.open_pixel_url(dispatch())
        if kind == "open"
        else api.signer.click_url(dispatch(), "https://www.uni.example.edu/")
    )
    forged = _altered(good.removesuffix(".gif")) + (".gif" if kind == "open" else "")
    answer = await api.client.get(path_of(forged))
    assert answer.status_code == 404
    assert "location" not in answer.headers
    assert answer.json()["detail"].startswith(f"not a valid {kind} link: link signature does not match")
    assert api.publisher.receipts == []


async def test_an_open_token_does_not_work_as_a_click(api: Api) -> None:
    token = api.signer.open_pixel_url(dispatch()).rsplit("/", 1)[1].removesuffix(".gif")
    answer = await api.client.get(f"/t/c/{token}")
    assert answer.status_code == 404 and "not a click link" in answer.json()["detail"]


async def test_when_the_broker_is_down_people_still_get_the_pixel_and_the_redirect(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    api.publisher.down = True
    pixel = await api.client.get(path_of(api.signer.open_pixel_url(dispatch())))
    click = await api.client.get(path_of(api.signer.click_url(dispatch(), "https://www.uni.example.edu/")))
    assert (pixel.status_code, click.status_code) == (200, 302)
    assert "receipt opened of message m-1 lost" in caplog.text
    assert "receipt clicked of message m-1 lost" in caplog.text


async def test_get_unsubscribe_only_shows_a_page(api: Api) -> None:
    url = path_of(api.signer.unsubscribe_url(dispatch()))
    page = await api.client.get(url)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "marketing messages by email" in page.text and '<form method="post">' in page.text
    assert (await api.consent.consent("s2024001")).unsubscriptions == ()


async def test_one_click_post_unsubscribes_from_that_category_on_that_channel(api: Api) -> None:
    url = path_of(api.signer.unsubscribe_url(dispatch()))
    answer = await api.client.post(
        url,
        content=b"List-Unsubscribe=One-Click",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 200 and "Unsubscribed" in answer.text
    refusals = await api.consent.refusals(
        [
            ConsentQuery("s2024001", "email", "marketing"),
            ConsentQuery("s2024001", "sms", "marketing"),
            ConsentQuery("s2024001", "email", "notice"),
        ]
    )
    today = datetime.now(UTC).date().isoformat()
    assert refusals == [f"unsubscribed from marketing on email (one-click link, {today})", None, None]
    assert (await api.client.post(url)).status_code == 200  # a second click is harmless


@pytest.mark.parametrize("method", ["GET", "POST"])
async def test_a_forged_unsubscribe_link_changes_nothing(api: Api, method: str) -> None:
    url = _altered(path_of(api.signer.unsubscribe_url(dispatch())))
    answer = await api.client.request(method, url)
    assert answer.status_code == 404 and "Link not valid" in answer.text
    assert (await api.consent.consent("s2024001")).unsubscriptions == ()


async def test_malformed_tokens_are_a_clear_4xx(api: Api) -> None:
    answer = await api.client.get("/t/c/not-a-token")
    assert answer.status_code == 422
    assert "token" in answer.text


@pytest.mark.parametrize(
    ("path", "logged"),
    [
        ("/v1/callbacks/aliyun-main?token=cb-secret-7f3a", "/v1/callbacks/aliyun-main"),
        ("/u/WzEsIm0tMSJd.gzZVWamgpAE7uy6zc2lSQw", "/u/…"),
        ("/t/c/WzEsIm0tMSJd.gzZVWamgpAE7uy6zc2lSQw?x=1", "/t/c/…"),
        ("/t/o/WzEsIm0tMSJd.gzZVWamgpAE7uy6zc2lSQw.gif", "/t/o/…"),
        ("/v1/inbox/s1", "/v1/inbox/s1"),
    ],
)
def test_access_logs_keep_no_tokens(path: str, logged: str) -> None:
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5000", "POST", path, "1.1", 200), None)
    assert RedactedAccessLog().filter(record)
    assert record.getMessage() == f'127.0.0.1:5000 - "POST {logged} HTTP/1.1" 200'

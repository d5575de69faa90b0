"""JPush's deduplication key, `cid`, bound to each send in Redis.

JPush pushes a `cid` once: a second push with the same cid within a day answers the first push's
result and pushes nothing. A cid cannot be made up (`{appkey}-{uuid}`, issued by
`GET /v3/push/cid?count=n`, valid for one day), so the adapter draws them from a small pool and binds
one to each send (message id and step) with `SET NX` in Redis: every retry of that send, from any
worker, carries the same cid, and a send repeated after a lost answer reaches the device once.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from collections.abc import Callable

import httpx
from redis.asyncio import Redis

from channels.base import RetryableSendError

# A cid lives a day from issue: pooled ones are used within an hour, bindings kept 20 hours, so a
# bound cid is never sent after it lapsed.
POOL_AGE = 3600.0
BINDING_SECONDS = 20 * 3600


class JPushCids:
    """Issues one cid per send key, the same to every worker, from cids fetched `batch` at a time."""

    def __init__(
        self,
        redis: Redis,
        http: httpx.AsyncClient,
        endpoint: str,
        authorization: str,
        app_key: str,
        *,
        batch: int = 10,
        timeout: httpx.Timeout | None = None,
        failure: Callable[[httpx.Response], Exception],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`failure` classifies a refused cid request as the adapter classifies a refused push."""
        self._redis, self._http = redis, http
        self._url = endpoint.rstrip("/") + "/v3/push/cid"
        self._auth, self._batch, self._timeout = authorization, batch, timeout or httpx.Timeout(10.0)
        self._prefix = f"sb:jpush:cid:{app_key}:"
        self._pool: deque[tuple[float, str]] = deque()
        self._fetching = asyncio.Lock()
        self._clock, self._failure = clock, failure

    async def for_send(self, send_key: str) -> str:
        """The cid bound to `send_key`, binding a fresh one if none is yet."""
        key = self._prefix + send_key
        bound = await self._redis.get(key)
        if bound is not None:
            return bound.decode() if isinstance(bound, bytes) else str(bound)
        candidate = await self._take()
        if await self._redis.set(key, candidate, nx=True, ex=BINDING_SECONDS):
            return candidate
        # Another worker bound one first: use its cid, keep ours for the next send.
        self._pool.appendleft((self._clock(), candidate))
        bound = await self._redis.get(key)
        if bound is None:  # bound and gone within a moment: only an operator's FLUSH does that
            raise RetryableSendError(f"jpush: the cid bound to {send_key} vanished from Redis")
        return bound.decode() if isinstance(bound, bytes) else str(bound)

    async def _take(self) -> str:
        async with self._fetching:
            while self._pool and self._clock() - self._pool[0][0] > POOL_AGE:
                self._pool.popleft()
            if not self._pool:
                fetched = self._clock()
                self._pool.extend((fetched, cid) for cid in await self._fetch())
            return self._pool.popleft()[1]

    async def _fetch(self) -> list[str]:
        try:
            response = await self._http.get(
                self._url, params={"count": str(self._batch), "type": "push"},
                headers={"Authorization": self._auth}, timeout=self._timeout,
            )
        except httpx.TimeoutException as exc:
            raise RetryableSendError(f"jpush cid request timed out: {type(exc).__name__}") from exc
        except httpx.TransportError as exc:
            raise RetryableSendError(f"jpush cid request failed: {type(exc).__name__}: {exc}") from exc
        try:
            cids = response.json().get("cidlist") if response.status_code == 200 else None
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):  # not a JSON object
            cids = None
        if not isinstance(cids, list) or not cids or not all(isinstance(c, str) and c for c in cids):
            raise self._failure(response)
        return list(cids)

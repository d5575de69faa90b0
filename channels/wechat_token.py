"""WeChat's access token, cached in Redis for every worker, and the API calls that carry it.

One token per appid is valid at a time, so all workers share it: the first worker to need a new one
takes a short Redis lock and fetches it, the others poll the cache until it appears. A call the API
refuses with an invalid or expired token (40001, 42001, 40014) refreshes the token once and is
retried once.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import Any

import httpx
from pydantic import SecretStr
from redis.asyncio import Redis

from channels.base import (
    CredentialsError,
    InvalidAddressError,
    PermanentSendError,
    ProviderOptions,
    RetryableSendError,
    SendError,
    ThrottledError,
)

log = logging.getLogger(__name__)

# The API's answers to a call made with a token it no longer accepts.
TOKEN_REJECTED = frozenset({40001, 40014, 42001})
# Refused recipients: not a follower, unknown openid, refused subscribe message.
_INVALID_RECIPIENT = frozenset({40003, 43004, 43101, 43019})
_THROTTLED = frozenset({45009, 45011, 45047})
_CREDENTIALS = frozenset({40013, 40125, 40164, 41002, 41004, 48001, 61024})
# Compare-and-delete: only drop the cached token if it is still the one the API refused.
_DROP_IF_SAME = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class WechatOptions(ProviderOptions):
    """What the official-account and mini-program adapters share: the app's credentials and endpoint."""

    base_url: str = "https://api.weixin.qq.com"
    appid: str
    secret: SecretStr
    stable_token: bool = True
    """Fetch with POST /cgi-bin/stable_token, which leaves tokens other systems hold valid; False uses
    the classic GET /cgi-bin/token, which replaces them: only when Switchboard alone uses the appid."""
    callback_token: SecretStr | None = None
    """The Token of the server configuration, which signs event pushes; no pushes are accepted without it."""
    timeout: float = 10.0
    token_margin: float = 300.0
    """Seconds before the token's expiry when it is no longer used."""
    cost_per_message: float = 0.0


def wechat_error(errcode: int, errmsg: str, what: str) -> SendError:
    """The send error for a WeChat errcode, its reason naming the code and WeChat's own message."""
    reason = f"{what}: errcode {errcode} {errmsg}".strip()
    if errcode in _INVALID_RECIPIENT:
        return InvalidAddressError(reason)
    if errcode in _THROTTLED:
        # Most WeChat quotas are daily: another provider, or a much later try, is what can help.
        return ThrottledError(reason, retry_after=3600.0 if errcode == 45009 else 60.0)
    if errcode in _CREDENTIALS or errcode in TOKEN_REJECTED:
        return CredentialsError(reason)
    if errcode == -1:  # "system error": WeChat asks to try again later
        return RetryableSendError(reason)
    return PermanentSendError(reason)


class WechatTokenCache:
    """The access token of one appid, shared through Redis; never logged, never in a repr."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        redis: Redis,
        options: WechatOptions,
        *,
        lock_seconds: float = 10.0,
        wait_seconds: float = 10.0,
        poll_seconds: float = 0.05,
        refused_seconds: float = 10.0,
    ) -> None:
        if not options.appid.strip():
            raise ValueError("wechat appid is empty")
        if not options.secret.get_secret_value():
            raise ValueError(f"wechat secret of appid {options.appid} is empty")
        if not options.base_url.startswith(("http://", "https://")):
            raise ValueError(f"wechat base_url {options.base_url!r} is not an http(s) URL")
        if options.timeout <= 0:
            raise ValueError(f"wechat timeout must be positive, got {options.timeout}")
        if options.token_margin < 0:
            raise ValueError(f"wechat token_margin must not be negative, got {options.token_margin}")
        self._http = http
        self._redis = redis
        self._options = options
        self._base = options.base_url.rstrip("/")
        self._key = f"wechat:token:{options.appid}"
        self._lock_key = f"{self._key}:lock"
        self._refused_key = f"{self._key}:refused"
        self._lock_ms = int(lock_seconds * 1000)
        self._wait = wait_seconds
        self._poll = poll_seconds
        self._refused_ms = int(refused_seconds * 1000)
        self.fetches = 0
        """How many tokens this instance fetched from WeChat (for tests and metrics)."""

    def __repr__(self) -> str:
        return f"WechatTokenCache(appid={self._options.appid!r})"

    async def token(self) -> str:
        """The cached token, or a new one fetched by whichever worker gets the lock first."""
        cached = await self._redis.get(self._key)
        if cached is not None:
            return _text(cached)
        return await self._await_new(stale=None)

    async def refresh(self, stale: str) -> str:
        """A token other than `stale`, which the API refused; concurrent callers share one fetch."""
        await self._redis.eval(_DROP_IF_SAME, 1, self._key, stale)
        return await self._await_new(stale=stale)

    async def _await_new(self, stale: str | None) -> str:
        deadline = time.monotonic() + self._wait
        owner = secrets.token_hex(8)
        while True:
            await self._raise_if_refused()
            if await self._redis.set(self._lock_key, owner, nx=True, px=self._lock_ms):
                try:
                    # Another worker may have stored a fresh token between our read and our lock.
                    cached = await self._redis.get(self._key)
                    if cached is not None and _text(cached) != stale:
                        return _text(cached)
                    await self._raise_if_refused()
                    try:
                        token, expires_in = await self._fetch(force=stale is not None)
                    except (CredentialsError, ThrottledError) as exc:
                        # Shared for a few seconds, so the waiting workers do not each ask again.
                        kind = "credentials" if isinstance(exc, CredentialsError) else "throttled"
                        await self._redis.set(self._refused_key, f"{kind}\n{exc}", px=self._refused_ms)
                        raise
                    margin = self._options.token_margin
                    # A stable token near its end comes back with little time left: keep half of it.
                    ttl = max(1, int(expires_in - margin if expires_in > 2 * margin else expires_in / 2))
                    await self._redis.set(self._key, token, ex=ttl)
                    return token
                finally:
                    await self._redis.eval(_DROP_IF_SAME, 1, self._lock_key, owner)
            cached = await self._redis.get(self._key)
            if cached is not None and _text(cached) != stale:
                return _text(cached)
            if time.monotonic() >= deadline:
                raise RetryableSendError(
                    f"wechat appid {self._options.appid}: no access token after waiting "
                    f"{self._wait:g}s for another worker's refresh"
                )
            await asyncio.sleep(self._poll)

    async def _raise_if_refused(self) -> None:
        refused = await self._redis.get(self._refused_key)
        if refused is not None:
            kind, _, reason = _text(refused).partition("\n")
            raise (CredentialsError if kind == "credentials" else ThrottledError)(reason)

    async def _fetch(self, force: bool) -> tuple[str, float]:
        options = self._options
        secret = options.secret.get_secret_value()
        what = f"wechat access token for appid {options.appid}"
        try:
            if options.stable_token:
                response = await self._http.post(
                    f"{self._base}/cgi-bin/stable_token",
                    json={"grant_type": "client_credential", "appid": options.appid,
                          "secret": secret, "force_refresh": force},
                    timeout=options.timeout,
                )
            else:
                response = await self._http.get(
                    f"{self._base}/cgi-bin/token",
                    params={"grant_type": "client_credential", "appid": options.appid, "secret": secret},
                    timeout=options.timeout,
                )
        except httpx.TimeoutException as exc:
            raise RetryableSendError(f"{what}: timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            # The exception text may hold the request URL, whose query carries the secret.
            raise RetryableSendError(f"{what}: connection failed ({type(exc).__name__})") from None
        answer = answer_json(response, what)
        token = answer.get("access_token")
        if not isinstance(token, str) or not token:
            error = wechat_error(int(answer.get("errcode", -1)), str(answer.get("errmsg", "")), what)
            if isinstance(error, PermanentSendError):
                # Any refusal of the app's own credentials is for an operator to fix.
                error = CredentialsError(str(error))
            raise error
        self.fetches += 1
        log.info("fetched a new %s (force_refresh=%s)", what, force)
        return token, float(answer.get("expires_in", 7200))


class WechatApi:
    """POSTs to WeChat with the shared access token, refreshing it once when the API refuses it."""

    def __init__(self, http: httpx.AsyncClient, tokens: WechatTokenCache, options: WechatOptions) -> None:
        self._http = http
        self._tokens = tokens
        self._options = options
        self._base = options.base_url.rstrip("/")

    async def post(self, path: str, payload: dict[str, Any], what: str) -> dict[str, Any]:
        """The answer of a successful call (errcode 0); raise the SendError its errcode means."""
        token = await self._tokens.token()
        answer = await self._post_once(path, payload, token, what)
        if answer.get("errcode") in TOKEN_REJECTED:
            log.info("%s: access token refused (errcode %s), refreshing once", what, answer.get("errcode"))
            token = await self._tokens.refresh(token)
            answer = await self._post_once(path, payload, token, what)
        errcode = int(answer.get("errcode", 0))
        if errcode != 0:
            raise wechat_error(errcode, str(answer.get("errmsg", "")), what)
        return answer

    async def _post_once(self, path: str, payload: dict[str, Any], token: str, what: str) -> dict[str, Any]:
        try:
            response = await self._http.post(
                f"{self._base}{path}", params={"access_token": token}, json=payload,
                timeout=self._options.timeout,
            )
        except httpx.TimeoutException as exc:
            raise RetryableSendError(f"{what}: timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            # Not chained and not formatted: the request URL in it carries the access token.
            raise RetryableSendError(f"{what}: connection failed ({type(exc).__name__})") from None
        return answer_json(response, what)


def answer_json(response: httpx.Response, what: str) -> dict[str, Any]:
    """The JSON object a provider answered; 5xx and unreadable answers are retryable, 429 throttled."""
    status = response.status_code
    if status == 429:
        raise ThrottledError(f"{what}: HTTP 429", retry_after=_seconds(response.headers.get("Retry-After")))
    if status >= 500:
        raise RetryableSendError(f"{what}: HTTP {status}")
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise (PermanentSendError if 400 <= status < 500 else RetryableSendError)(
            f"{what}: HTTP {status} with an answer that is not a JSON object"
        )
    return answer


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

"""End-user tokens: `sbu_` + a JWT (HS256, pyjwt) bound to one user and one app, minted for an app's
backend (`POST /v1/user-tokens`) so its signed-in user reaches their own inbox and consent.

Nothing is stored: the signature and the expiry are the whole check, so a token stays valid until it
expires (at most `MAX_TTL_SECONDS`); disabling or removing the app that minted it ends it at once,
since the API checks the app on every use.
"""

from __future__ import annotations

import time
import uuid

import jwt
from pydantic import SecretStr

PREFIX = "sbu_"
MAX_TTL_SECONDS = 24 * 3600
AUDIENCE = "switchboard:user"
_ALGORITHM = "HS256"


class UserTokenSigner:
    """Mints and verifies end-user tokens with the server's key (`SWITCHBOARD_USER_TOKEN_SECRET`)."""

    def __init__(self, secret: SecretStr) -> None:
        if len(secret.get_secret_value().encode()) < 32:
            raise ValueError("the end-user token key must be at least 32 bytes")
        self._secret = secret

    def mint(self, app: str, user_id: str, ttl_seconds: int) -> tuple[str, int]:
        """A token for `user_id` of `app`, valid `ttl_seconds` (1 to a day); returns it and its expiry
        (Unix time)."""
        if not 1 <= ttl_seconds <= MAX_TTL_SECONDS:
            raise ValueError(f"ttl_seconds must be 1 to {MAX_TTL_SECONDS}, got {ttl_seconds}")
        now = int(time.time())
        claims = {"sub": user_id, "app": app, "aud": AUDIENCE, "iat": now, "exp": now + ttl_seconds,
                  "jti": uuid.uuid4().hex}
        token = jwt.encode(claims, self._secret.get_secret_value(), algorithm=_ALGORITHM)
        return PREFIX + token, now + ttl_seconds

    def verify(self, token: str) -> tuple[str, str] | None:
        """(app, user_id) of a valid, unexpired token, else None."""
        if not token.startswith(PREFIX):
            return None
        try:
            claims = jwt.decode(
                token[len(PREFIX):], self._secret.get_secret_value(), algorithms=[_ALGORITHM],
                audience=AUDIENCE, options={"require": ["exp", "sub", "app", "aud"]},
            )
        except jwt.PyJWTError:
            return None
        app, user_id = claims.get("app"), claims.get("sub")
        if not isinstance(app, str) or not isinstance(user_id, str):
            return None
        if claims["exp"] - claims.get("iat", 0) > MAX_TTL_SECONDS:
            return None
        return app, user_id

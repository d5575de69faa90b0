"""Every endpoint of the API with the permission it declares and a valid sample request: the table the
security matrix (`test_security_matrix.py`) walks with every built-in role, no credentials, a forged,
a revoked and a foreign credential, and an end-user token.

A row's `permission` is a catalog permission (`settings.permissions.PERMISSIONS`), or one of the powers
outside the catalog (`api.access.USER_POWERS`: an end-user token on its own user; `APP_ONLY_POWERS`:
app keys only), or `AUTHENTICATED` (any valid credential). `also` lists permissions that admit the
request too. `app` is the app the request acts on: a scoped permission is checked on it (`*`: the
request concerns every app, e.g. a person's whole inbox); None: the request names no app (a listing,
filtered to the caller's apps).

The fixture of the matrix provides: apps `MATRIX_APP` (the one rows act on) and `OTHER_APP` (the
foreign one), `TARGET_APP` for rows that change or remove an app, the end user `MATRIX_USER` of
`MATRIX_APP` with an inbox message `MATRIX_MESSAGE`, and the operator `TARGET_OPERATOR` for rows that
change one. Keep each part's rows in its own block, headed by the part's name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MATRIX_APP = "matrix"
OTHER_APP = "other"
TARGET_APP = "target"
MATRIX_USER = "s-matrix"
MATRIX_MESSAGE = "m-matrix"
TARGET_OPERATOR = "target-operator"
AUTHENTICATED = "@authenticated"

# Routes with no permission at all: each authenticates itself some other way, or serves anyone.
PUBLIC_ROUTES: frozenset[tuple[str, str]] = frozenset(
    {
        ("GET", "/healthz"),
        ("GET", "/metrics"),
        # Signed links: the token in the path is the capability.
        ("GET", "/t/o/{token}"),
        ("GET", "/t/c/{token}"),
        ("GET", "/u/{token}"),
        ("POST", "/u/{token}"),
        # Provider callbacks: verified per provider (signature or token).
        ("POST", "/v1/callbacks/{provider}"),
        ("GET", "/v1/callbacks/{provider}"),
        # Logging in: the name and password are the credentials (failures counted per address).
        ("POST", "/v1/sessions"),
        # FastAPI's documentation.
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
        ("GET", "/docs/oauth2-redirect"),
        ("GET", "/redoc"),
    }
)


@dataclass(frozen=True)
class EndpointCase:
    """One endpoint: method, concrete path, the permission it needs, a valid body, the app it acts on."""

    method: str
    path: str
    permission: str
    body: Any = None
    app: str | None = None
    also: tuple[str, ...] = ()
    route: str = ""
    """The route's path template when it differs from `path` (for the coverage check)."""

    @property
    def template(self) -> str:
        return self.route or self.path

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


EVENT = {
    "event_id": "matrix-1", "app": MATRIX_APP, "type": "course.reminder", "template": "course_reminder",
    "audience": {"user_ids": [MATRIX_USER]}, "category": "notice",
    "data": {"course": "Linear Algebra", "starts_at": "2026-11-23 08:00", "room": "A101"},
}
CONVERSION = {
    "conversion_id": "matrix-c1", "app": MATRIX_APP, "user_id": MATRIX_USER, "type": "payment",
    "occurred_at": "2026-01-01T00:00:00Z",
}

CASES: list[EndpointCase] = [
    # --- access: events, conversions, reports (app powers) -------------------------------------------
    EndpointCase("POST", "/v1/events", "events:send", EVENT, app=MATRIX_APP),
    EndpointCase("POST", "/v1/events:batch", "events:send", [EVENT], app=MATRIX_APP),
    EndpointCase("POST", "/v1/conversions", "conversions:report", CONVERSION, app=MATRIX_APP),
    EndpointCase("POST", "/v1/conversions:batch", "conversions:report", [CONVERSION], app=MATRIX_APP),
    EndpointCase("GET", f"/v1/reports/funnel?app={MATRIX_APP}", "statistics:read", app=MATRIX_APP,
                 route="/v1/reports/funnel"),
    EndpointCase("GET", f"/v1/messages/{MATRIX_MESSAGE}/trace?app={MATRIX_APP}", "statistics:read",
                 app=MATRIX_APP, route="/v1/messages/{message_id}/trace"),
    # --- access: the inbox (its user's token; operators read only) -----------------------------------
    EndpointCase("GET", f"/v1/inbox/{MATRIX_USER}", "inbox:own", also=("people:read",), app="*",
                 route="/v1/inbox/{user_id}"),
    EndpointCase("GET", f"/v1/inbox/{MATRIX_USER}/unread", "inbox:own", also=("people:read",), app="*",
                 route="/v1/inbox/{user_id}/unread"),
    EndpointCase("POST", f"/v1/inbox/{MATRIX_USER}/{MATRIX_MESSAGE}/read", "inbox:own",
                 route="/v1/inbox/{user_id}/{message_id}/read"),
    EndpointCase("POST", f"/v1/inbox/{MATRIX_USER}/{MATRIX_MESSAGE}/click", "inbox:own",
                 route="/v1/inbox/{user_id}/{message_id}/click"),
    EndpointCase("DELETE", f"/v1/inbox/{MATRIX_USER}/no-such-message", "inbox:own",
                 route="/v1/inbox/{user_id}/{message_id}"),
    # --- consent (rows as the access part expects them; the consent part owns the endpoints) ---------
    EndpointCase("POST", "/v1/consent/unsubscribes", "people:manage", also=("consent:own",),
                 body={"user_id": MATRIX_USER, "category": "marketing"}, app="*"),
    EndpointCase("DELETE", f"/v1/consent/unsubscribes?user_id={MATRIX_USER}&category=marketing",
                 "people:manage", also=("consent:own",), app="*", route="/v1/consent/unsubscribes"),
    EndpointCase("GET", f"/v1/consent/{MATRIX_USER}", "people:read", also=("consent:own",), app="*",
                 route="/v1/consent/{user_id}"),
    EndpointCase("POST", "/v1/consent/blacklist", "people:manage",
                 body={"subject": MATRIX_USER, "reason": "matrix"}, app="*"),
    EndpointCase("DELETE", f"/v1/consent/blacklist?subject={MATRIX_USER}", "people:manage", app="*",
                 route="/v1/consent/blacklist"),
    # --- budgets -----------------------------------------------------------------------------------
    # GET and DELETE of one budget answer 404 when the matrix has set none: allowed, not found.
    EndpointCase("GET", "/v1/budgets", "budgets:read"),
    EndpointCase("PUT", "/v1/budgets", "budgets:manage",
                 body={"app": MATRIX_APP, "period": "day", "limit": 10}, app=MATRIX_APP),
    EndpointCase("GET", f"/v1/budgets/{MATRIX_APP}/day", "budgets:read", app=MATRIX_APP,
                 route="/v1/budgets/{app}/{period}"),
    EndpointCase("DELETE", f"/v1/budgets/{MATRIX_APP}/day", "budgets:manage", app=MATRIX_APP,
                 route="/v1/budgets/{app}/{period}"),
]

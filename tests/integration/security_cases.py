"""Every endpoint of the API with the permission it declares and a valid sample request: the table the
security matrix (`test_security_matrix.py`) walks with every built-in role, no credentials, a forged,
a revoked and a foreign credential, and an end-user token.

A row's `permission` is a catalog permission (`settings.permissions.PERMISSIONS`), or one of the powers
outside the catalog (`api.access.USER_POWERS`: an end-user token on its own user; `APP_ONLY_POWERS`:
app keys only), or `AUTHENTICATED` (any valid credential), or `OPERATOR` (any operator). `also` lists
permissions that admit the request too. `app` is the app the request acts on: a scoped permission is
checked on it (`*`: the request concerns every app, e.g. a person's whole inbox); None: the request
names no app (a listing, filtered to the caller's apps).

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
MATRIX_UPLOAD = "up-matrix"
AUTHENTICATED = "@authenticated"
OPERATOR = "@operator"
"""Any operator, whatever their roles (their own password and tokens); never an app or an end user."""
NEW_PASSWORD = "matrix password 2026!"

# Routes with no permission at all: each authenticates itself some other way, or serves anyone.
PUBLIC_ROUTES: frozenset[tuple[str, str]] = frozenset(
    {
        ("GET", "/healthz"),
        ("GET", "/metrics"),
        # Signed links: the token in the path is the capability.
        ("GET", "/t/o/{token}.gif"),
        ("GET", "/t/c/{token}"),
        ("GET", "/u/{token}"),
        ("POST", "/u/{token}"),
        # Provider callbacks: verified per provider (signature or token).
        ("POST", "/v1/callbacks/{provider_name}"),
        ("GET", "/v1/callbacks/{provider_name}"),
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
    files: dict[str, tuple[str, bytes, str]] | None = None
    """A multipart request's files; `body` is then its form fields."""

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
    "currency": "CNY", "value": "5500.00", "occurred_at": "2026-01-01T00:00:00Z",
}

# channel accounts: the account the rows act on (created by the first row a caller may call)
MATRIX_CHANNEL = "matrix-oa"
CHANNEL_ACCOUNT = {
    "code": MATRIX_CHANNEL, "name": "矩阵服务号", "type": "wechat_oa", "platform": "wechat-oa",
    "settings": {"appid": "wxmatrix0001"}, "secrets": {"secret": "matrix-secret-value-0000"},
}

# campaigns: a composition of the matrix app, and a campaign id of it that no row creates
COMPOSITION = {
    "app": MATRIX_APP, "name": "matrix campaign", "audience": {"user_ids": [MATRIX_USER]},
    "channels": ["inbox"], "category": "notice", "template": "course_reminder", "data": EVENT["data"],
}
MATRIX_CAMPAIGN = f"{MATRIX_APP}.c000000000000"

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
    # An operator with people:read on some apps reads those apps' messages of the inbox.
    EndpointCase("GET", f"/v1/inbox/{MATRIX_USER}", "inbox:own", also=("people:read",),
                 route="/v1/inbox/{user_id}"),
    EndpointCase("GET", f"/v1/inbox/{MATRIX_USER}/unread", "inbox:own", also=("people:read",),
                 route="/v1/inbox/{user_id}/unread"),
    EndpointCase("POST", f"/v1/inbox/{MATRIX_USER}/{MATRIX_MESSAGE}/read", "inbox:own",
                 route="/v1/inbox/{user_id}/{message_id}/read"),
    EndpointCase("POST", f"/v1/inbox/{MATRIX_USER}/{MATRIX_MESSAGE}/click", "inbox:own",
                 route="/v1/inbox/{user_id}/{message_id}/click"),
    EndpointCase("DELETE", f"/v1/inbox/{MATRIX_USER}/no-such-message", "inbox:own",
                 route="/v1/inbox/{user_id}/{message_id}"),
    # --- access: user tokens, who am I, my password and tokens, logging out ------------------------------
    EndpointCase("POST", "/v1/user-tokens", "user_tokens:issue",
                 {"user_id": MATRIX_USER, "ttl_seconds": 600}),
    EndpointCase("GET", "/v1/me", AUTHENTICATED),
    EndpointCase("GET", "/v1/permissions", AUTHENTICATED),
    EndpointCase("PUT", "/v1/me/password", OPERATOR,
                 {"old_password": "not the password", "new_password": NEW_PASSWORD}),
    EndpointCase("GET", "/v1/me/tokens", OPERATOR),
    EndpointCase("POST", "/v1/me/tokens", OPERATOR, {"label": "matrix"}),
    EndpointCase("DELETE", "/v1/me/tokens/tok_none", OPERATOR, route="/v1/me/tokens/{token_id}"),
    EndpointCase("DELETE", "/v1/sessions/current", AUTHENTICATED),
    # --- access: operators and roles (global permissions) ----------------------------------------------
    EndpointCase("GET", "/v1/operators", "operators:read"),
    EndpointCase("POST", "/v1/operators", "operators:manage",
                 {"name": "matrix-new", "password": NEW_PASSWORD,
                  "grants": [{"role": "analyst", "apps": ["*"]}]}),
    EndpointCase("GET", f"/v1/operators/{TARGET_OPERATOR}", "operators:read", route="/v1/operators/{name}"),
    EndpointCase("PATCH", f"/v1/operators/{TARGET_OPERATOR}", "operators:manage", {"display_name": "Target"},
                 route="/v1/operators/{name}"),
    EndpointCase("DELETE", "/v1/operators/nobody-here", "operators:manage", route="/v1/operators/{name}"),
    EndpointCase("POST", f"/v1/operators/{TARGET_OPERATOR}/lock", "operators:manage",
                 route="/v1/operators/{name}/lock"),
    EndpointCase("POST", f"/v1/operators/{TARGET_OPERATOR}/unlock", "operators:manage",
                 route="/v1/operators/{name}/unlock"),
    EndpointCase("PUT", f"/v1/operators/{TARGET_OPERATOR}/password", "operators:manage",
                 {"password": NEW_PASSWORD}, route="/v1/operators/{name}/password"),
    EndpointCase("POST", f"/v1/operators/{TARGET_OPERATOR}/grants", "operators:manage",
                 {"role": "analyst", "apps": [MATRIX_APP]}, route="/v1/operators/{name}/grants"),
    EndpointCase("DELETE", f"/v1/operators/{TARGET_OPERATOR}/grants/sender", "operators:manage",
                 route="/v1/operators/{name}/grants/{role}"),
    EndpointCase("GET", f"/v1/operators/{TARGET_OPERATOR}/tokens", "operators:read",
                 route="/v1/operators/{name}/tokens"),
    EndpointCase("DELETE", f"/v1/operators/{TARGET_OPERATOR}/tokens/tok_none", "operators:manage",
                 route="/v1/operators/{name}/tokens/{token_id}"),
    EndpointCase("GET", "/v1/roles", "operators:read"),
    EndpointCase("PUT", "/v1/roles/matrix-role", "roles:manage", {"permissions": ["apps:read"]},
                 route="/v1/roles/{name}"),
    EndpointCase("DELETE", "/v1/roles/no-such-role", "roles:manage", route="/v1/roles/{name}"),
    # --- access: upstream apps ------------------------------------------------------------------------
    EndpointCase("GET", "/v1/apps", "apps:read"),
    EndpointCase("GET", f"/v1/apps/{MATRIX_APP}", "apps:read", app=MATRIX_APP, route="/v1/apps/{name}"),
    EndpointCase("POST", "/v1/apps", "apps:manage", {"name": TARGET_APP, "channels": ["inbox"]},
                 app=TARGET_APP),
    EndpointCase("POST", f"/v1/apps/{TARGET_APP}/key", "apps:manage", app=TARGET_APP,
                 route="/v1/apps/{name}/key"),
    EndpointCase("POST", f"/v1/apps/{TARGET_APP}/disable", "apps:manage", app=TARGET_APP,
                 route="/v1/apps/{name}/disable"),
    EndpointCase("POST", f"/v1/apps/{TARGET_APP}/enable", "apps:manage", app=TARGET_APP,
                 route="/v1/apps/{name}/enable"),
    EndpointCase("PUT", f"/v1/apps/{TARGET_APP}/channels", "apps:manage", {"channels": ["inbox", "email"]},
                 app=TARGET_APP, route="/v1/apps/{name}/channels"),
    EndpointCase("DELETE", f"/v1/apps/{TARGET_APP}", "apps:manage", app=TARGET_APP, route="/v1/apps/{name}"),
    # --- channel accounts: reading with channels:read; changes to an account for every app need
    # channels:manage over every app, (un)authorising one app needs it on that app --------------------
    EndpointCase("POST", "/v1/channel-accounts", "channels:manage", CHANNEL_ACCOUNT, app="*"),
    EndpointCase("GET", "/v1/channel-accounts", "channels:read"),
    EndpointCase("GET", f"/v1/channel-accounts/{MATRIX_CHANNEL}", "channels:read",
                 route="/v1/channel-accounts/{code}"),
    EndpointCase("PATCH", f"/v1/channel-accounts/{MATRIX_CHANNEL}", "channels:manage", {"name": "矩阵服务号"},
                 app="*", route="/v1/channel-accounts/{code}"),
    EndpointCase("PUT", f"/v1/channel-accounts/{MATRIX_CHANNEL}/secrets/secret", "channels:manage",
                 {"value": "matrix-secret-value-0001"}, app="*",
                 route="/v1/channel-accounts/{code}/secrets/{name}"),
    EndpointCase("DELETE", f"/v1/channel-accounts/{MATRIX_CHANNEL}/secrets/callback_token", "channels:manage",
                 app="*", route="/v1/channel-accounts/{code}/secrets/{name}"),
    EndpointCase("POST", f"/v1/channel-accounts/{MATRIX_CHANNEL}/enable", "channels:manage", app="*",
                 route="/v1/channel-accounts/{code}/enable"),
    EndpointCase("POST", f"/v1/channel-accounts/{MATRIX_CHANNEL}/disable", "channels:manage", app="*",
                 route="/v1/channel-accounts/{code}/disable"),
    EndpointCase("PUT", f"/v1/channel-accounts/{MATRIX_CHANNEL}/apps/{MATRIX_APP}", "channels:manage",
                 app=MATRIX_APP, route="/v1/channel-accounts/{code}/apps/{app}"),
    EndpointCase("DELETE", f"/v1/channel-accounts/{MATRIX_CHANNEL}/apps/{MATRIX_APP}", "channels:manage",
                 app=MATRIX_APP, route="/v1/channel-accounts/{code}/apps/{app}"),
    EndpointCase("POST", "/v1/channel-accounts/rotate-secrets", "channels:manage", app="*"),
    EndpointCase("DELETE", f"/v1/channel-accounts/{MATRIX_CHANNEL}", "channels:manage", app="*",
                 route="/v1/channel-accounts/{code}"),
    # --- consent: a person's own token, or operators over every app; the lists are operators' --------
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
    EndpointCase("POST", "/v1/consent/opt-ins", "people:manage", also=("consent:own",),
                 body={"user_id": MATRIX_USER, "category": "marketing", "source": "matrix form"}, app="*"),
    EndpointCase("DELETE", f"/v1/consent/opt-ins?user_id={MATRIX_USER}&category=marketing",
                 "people:manage", also=("consent:own",), app="*", route="/v1/consent/opt-ins"),
    EndpointCase("GET", "/v1/whitelist", "people:read", app="*"),
    EndpointCase("POST", "/v1/whitelist", "people:manage", body={"subject": MATRIX_USER, "reason": "matrix"},
                 app="*"),
    EndpointCase("DELETE", f"/v1/whitelist?subject={MATRIX_USER}", "people:manage", app="*",
                 route="/v1/whitelist"),
    EndpointCase("GET", "/v1/test-mode", "people:read"),
    EndpointCase("PUT", f"/v1/test-mode/{MATRIX_APP}", "people:manage", body={"test_mode": False},
                 app=MATRIX_APP, route="/v1/test-mode/{app}"),
    # --- data rights: a person's whole data, over every app (global permissions) --------------------
    EndpointCase("GET", f"/v1/people/{MATRIX_USER}/export", "data_rights:export", app="*",
                 route="/v1/people/{user_id}/export"),
    EndpointCase("POST", f"/v1/people/{MATRIX_USER}/erase", "data_rights:erase", app="*",
                 body={"reason": "security matrix request", "mode": "anonymise"},
                 route="/v1/people/{user_id}/erase"),
    # --- audit and dead letters ----------------------------------------------------------------------
    EndpointCase("GET", "/v1/audit?action=app.&since=1d", "audit:read", route="/v1/audit"),
    EndpointCase("GET", "/v1/dead-letters?stage=ingest", "dead_letters:read", route="/v1/dead-letters"),
    EndpointCase("GET", f"/v1/dead-letters?app={MATRIX_APP}", "dead_letters:read", app=MATRIX_APP,
                 route="/v1/dead-letters"),
    EndpointCase("GET", "/v1/dead-letters/0-0", "dead_letters:read", route="/v1/dead-letters/{letter_id}"),
    EndpointCase("POST", "/v1/dead-letters/0-0/replay", "dead_letters:replay", body={},
                 route="/v1/dead-letters/{letter_id}/replay"),
    EndpointCase("POST", "/v1/dead-letters:replay", "dead_letters:replay",
                 body={"app": MATRIX_APP, "limit": 1}, app=MATRIX_APP),
    # --- approvals ---------------------------------------------------------------------------------------
    # Items are named by id: the app is known only once found, so the rows name none (404 when allowed).
    EndpointCase("GET", "/v1/approvals?state=pending", "approvals:decide", route="/v1/approvals"),
    EndpointCase("GET", "/v1/approvals/ap_matrix", "approvals:decide", route="/v1/approvals/{approval_id}"),
    EndpointCase("POST", "/v1/approvals/ap_matrix/approve", "approvals:decide", body={"comment": "ok"},
                 route="/v1/approvals/{approval_id}/approve"),
    EndpointCase("POST", "/v1/approvals/ap_matrix/reject", "approvals:decide", body={"comment": "no"},
                 route="/v1/approvals/{approval_id}/reject"),
    EndpointCase("GET", "/v1/approval-policies", "approvals:manage"),
    EndpointCase("PUT", "/v1/approval-policies/matrix-review", "approvals:manage",
                 body={"apps": [MATRIX_APP], "categories": ["marketing"], "levels": ["approver"]},
                 app=MATRIX_APP, route="/v1/approval-policies/{name}"),
    EndpointCase("DELETE", "/v1/approval-policies/matrix-missing", "approvals:manage",
                 route="/v1/approval-policies/{name}"),
    # --- budgets -----------------------------------------------------------------------------------
    # GET and DELETE of one budget answer 404 when the matrix has set none: allowed, not found.
    EndpointCase("GET", "/v1/budgets", "budgets:read"),
    EndpointCase("PUT", "/v1/budgets", "budgets:manage",
                 body={"app": MATRIX_APP, "period": "day", "limit": 10}, app=MATRIX_APP),
    EndpointCase("GET", f"/v1/budgets/{MATRIX_APP}/day", "budgets:read", app=MATRIX_APP,
                 route="/v1/budgets/{app}/{period}"),
    EndpointCase("DELETE", f"/v1/budgets/{MATRIX_APP}/day", "budgets:manage", app=MATRIX_APP,
                 route="/v1/budgets/{app}/{period}"),
    # --- templates (stored, versioned) ------------------------------------------------------------
    # A template is named in the path: its app is known once found, so those rows name none (404 when
    # allowed, the matrix having stored none); saving a first version names its app in the body.
    EndpointCase("GET", "/v1/templates", "templates:read"),
    EndpointCase("POST", "/v1/templates/matrix_notice/versions", "templates:edit", app=MATRIX_APP,
                 body={"app": MATRIX_APP, "inbox": {"title": "t", "body": "b"}},
                 route="/v1/templates/{name}/versions"),
    EndpointCase("GET", "/v1/templates/matrix_missing", "templates:read", route="/v1/templates/{name}"),
    EndpointCase("GET", "/v1/templates/matrix_missing/versions", "templates:read",
                 route="/v1/templates/{name}/versions"),
    EndpointCase("GET", "/v1/templates/matrix_missing/versions/1", "templates:read",
                 route="/v1/templates/{name}/versions/{number}"),
    EndpointCase("POST", "/v1/templates/matrix_missing/versions/1/preview", "templates:read", body={},
                 route="/v1/templates/{name}/versions/{number}/preview"),
    EndpointCase("GET", "/v1/templates/matrix_missing/diff?from=1&to=2", "templates:read",
                 route="/v1/templates/{name}/diff"),
    EndpointCase("POST", "/v1/templates/matrix_missing/versions/1/publish", "templates:publish",
                 route="/v1/templates/{name}/versions/{number}/publish"),
    # --- segments ----------------------------------------------------------------------------------
    # One segment and its preview answer 404 for a name the matrix has not defined: allowed, not found.
    EndpointCase("GET", "/v1/segments", "segments:read"),
    EndpointCase("PUT", "/v1/segments/matrix-segment", "segments:manage",
                 body={"app": MATRIX_APP, "definition": {"tags": {"all": ["matrix"]}}}, app=MATRIX_APP,
                 route="/v1/segments/{name}"),
    EndpointCase("GET", "/v1/segments/matrix-missing", "segments:read", route="/v1/segments/{name}"),
    EndpointCase("DELETE", "/v1/segments/matrix-missing", "segments:manage", route="/v1/segments/{name}"),
    EndpointCase("GET", "/v1/segments/matrix-missing/preview", "segments:read",
                 route="/v1/segments/{name}/preview"),
    EndpointCase("POST", "/v1/segments/preview", "segments:read",
                 body={"app": MATRIX_APP, "definition": {"bound": "email"}}, app=MATRIX_APP),
    # --- strategies ---------------------------------------------------------------------------------
    # The rule files' named strategies: senders (app keys too) name them, template editors preview them.
    EndpointCase("GET", "/v1/strategies", "events:send", also=("templates:read",)),
    # --- uploads -----------------------------------------------------------------------------------
    # The fixture holds the upload MATRIX_UPLOAD of MATRIX_APP; once a caller removed it, the others
    # are still checked against its app (a removed upload answers 404 only to those who manage it).
    EndpointCase("POST", "/v1/uploads", "uploads:manage", body={"app": MATRIX_APP, "kind": "phone"},
                 files={"file": ("list.csv", b"13800138000\n", "text/csv")}, app=MATRIX_APP),
    EndpointCase("GET", "/v1/uploads", "uploads:manage"),
    EndpointCase("GET", f"/v1/uploads/{MATRIX_UPLOAD}", "uploads:manage", app=MATRIX_APP,
                 route="/v1/uploads/{upload_id}"),
    EndpointCase("GET", f"/v1/uploads/{MATRIX_UPLOAD}/errors", "uploads:manage", app=MATRIX_APP,
                 route="/v1/uploads/{upload_id}/errors"),
    EndpointCase("DELETE", f"/v1/uploads/{MATRIX_UPLOAD}", "uploads:manage", app=MATRIX_APP,
                 route="/v1/uploads/{upload_id}"),
    # --- campaigns ---------------------------------------------------------------------------------
    # A campaign id starts with its app, so one the matrix never made is authorised on MATRIX_APP and
    # then answers 404: allowed, not found.
    EndpointCase("POST", "/v1/campaigns", "campaigns:manage", COMPOSITION, app=MATRIX_APP),
    EndpointCase("POST", "/v1/campaigns/estimate", "campaigns:manage", COMPOSITION, app=MATRIX_APP),
    EndpointCase("GET", "/v1/campaigns", "campaigns:read"),
    EndpointCase("GET", f"/v1/campaigns/{MATRIX_CAMPAIGN}", "campaigns:read", app=MATRIX_APP,
                 route="/v1/campaigns/{campaign_id}"),
    EndpointCase("GET", f"/v1/campaigns/{MATRIX_CAMPAIGN}/report", "campaigns:read", app=MATRIX_APP,
                 route="/v1/campaigns/{campaign_id}/report"),
    *(
        EndpointCase("POST", f"/v1/campaigns/{MATRIX_CAMPAIGN}/{action}", "campaigns:manage", app=MATRIX_APP,
                     route=f"/v1/campaigns/{{campaign_id}}/{action}")
        for action in ("submit", "cancel", "recall")
    ),
    # --- people: the directory's persons and their addresses (global permissions) -------------------------
    # The first role allowed creates the person (201), the next ones find it taken (409); the person
    # changed and removed is one nobody created (404 when allowed), so the matrix user stays.
    EndpointCase("GET", "/v1/people?prefix=s-&limit=5", "people:read", app="*", route="/v1/people"),
    EndpointCase("POST", "/v1/people", "people:write",
                 body={"user_id": "matrix-person", "addresses": {"email": ["matrix@uni.example"]}}),
    EndpointCase("GET", f"/v1/people/{MATRIX_USER}", "people:read", app="*", route="/v1/people/{user_id}"),
    EndpointCase("GET", f"/v1/people/{MATRIX_USER}/addresses", "people:read", app="*",
                 route="/v1/people/{user_id}/addresses"),
    EndpointCase("PATCH", "/v1/people/matrix-nobody", "people:write", body={"name": "Nobody"},
                 route="/v1/people/{user_id}"),
    EndpointCase("DELETE", "/v1/people/matrix-nobody", "people:write", route="/v1/people/{user_id}"),
]

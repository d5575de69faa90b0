"""Every console route with the permission it needs and a sample form: the table the console's
security test (`test_console_security.py`) walks with every built-in role, without a session, and
without the CSRF token. The API's own matrix (`security_cases.py`) leaves `/console` to this table,
since the console authenticates with a cookie session, not a bearer credential.

`permission` is a catalog permission, or `SESSION` (any operator with a live session). Rows act on
the operator `TARGET_OPERATOR` and on letter `0-0`, which need not exist: a refusal of the action
itself (404, 422, 409) still shows the permission check let it through. Keep each page's rows in its
own block, headed by the page's name.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SESSION = "@session"
TARGET_OPERATOR = "target-operator"

# Routes anyone may reach: logging in, the static files, and the redirects to them.
CONSOLE_PUBLIC: frozenset[tuple[str, str]] = frozenset({
    ("GET", "/console"),
    ("GET", "/console/login"),
    ("POST", "/console/login"),   # the name and password are the credentials; CSRF by the login cookie
    ("POST", "/console/logout"),  # ends the cookie's session, if any (CSRF-checked like every POST)
    ("GET", "/console/static/{name}"),
})


@dataclass(frozen=True)
class ConsoleCase:
    method: str
    path: str
    permission: str
    form: dict[str, str] = field(default_factory=dict)
    route: str = ""
    """The route's path template when it differs from `path`."""

    @property
    def template(self) -> str:
        return self.route or self.path


_OPERATOR = f"/console/members/operators/{TARGET_OPERATOR}"
_CAMPAIGN = "/console/send/lms.c0123456789ab"  # need not exist: 404 once the permission let it through

CONSOLE_CASES: tuple[ConsoleCase, ...] = (
    # base
    ConsoleCase("GET", "/console/", SESSION),
    ConsoleCase("POST", "/console/locale", SESSION, {"locale": "en"}),
    # overview
    ConsoleCase("GET", "/console/overview", "statistics:read"),
    # members
    ConsoleCase("GET", "/console/members", "operators:read"),
    ConsoleCase("POST", "/console/members/operators", "operators:manage", {"name": "", "password": "x"}),
    ConsoleCase("POST", f"{_OPERATOR}/lock", "operators:manage",
                route="/console/members/operators/{name}/lock"),
    ConsoleCase("POST", f"{_OPERATOR}/unlock", "operators:manage",
                route="/console/members/operators/{name}/unlock"),
    ConsoleCase("POST", f"{_OPERATOR}/password", "operators:manage", {"password": "short"},
                route="/console/members/operators/{name}/password"),
    ConsoleCase("POST", f"{_OPERATOR}/grants", "operators:manage", {"role": "no-such-role"},
                route="/console/members/operators/{name}/grants"),
    ConsoleCase("POST", f"{_OPERATOR}/revoke", "operators:manage", {"role": "no-such-role"},
                route="/console/members/operators/{name}/revoke"),
    ConsoleCase("POST", "/console/members/roles", "roles:manage", {"name": "matrix-role"}),
    ConsoleCase("POST", "/console/members/roles/no-such-role/remove", "roles:manage",
                route="/console/members/roles/{role}/remove"),
    # send
    ConsoleCase("GET", "/console/send", "campaigns:read"),
    ConsoleCase("GET", "/console/send/new", "campaigns:manage"),
    ConsoleCase("POST", "/console/send/preview", "campaigns:manage", {"app": "lms", "target": "all"}),
    ConsoleCase("POST", "/console/send/new", "campaigns:manage", {"app": "lms", "target": "all"}),
    ConsoleCase("POST", "/console/send/upload", "campaigns:manage", {"app": ""}),
    ConsoleCase("GET", _CAMPAIGN, "campaigns:read", route="/console/send/{campaign_id}"),
    ConsoleCase("GET", f"{_CAMPAIGN}/progress", "campaigns:read",
                route="/console/send/{campaign_id}/progress"),
    ConsoleCase("POST", f"{_CAMPAIGN}/cancel", "campaigns:manage",
                route="/console/send/{campaign_id}/{action}"),
    # approvals
    ConsoleCase("GET", "/console/approvals", "approvals:decide"),
    ConsoleCase("GET", "/console/approvals/ap_0", "approvals:decide",
                route="/console/approvals/{approval_id}"),
    ConsoleCase("POST", "/console/approvals/ap_0/approve", "approvals:decide", {"comment": "ok"},
                route="/console/approvals/{approval_id}/{verdict}"),
    # audit
    ConsoleCase("GET", "/console/audit", "audit:read"),
    # dead letters
    ConsoleCase("GET", "/console/dead-letters", "dead_letters:read"),
    ConsoleCase("GET", "/console/dead-letters/0-0", "dead_letters:read",
                route="/console/dead-letters/{letter_id}"),
    ConsoleCase("POST", "/console/dead-letters/0-0/replay", "dead_letters:replay",
                route="/console/dead-letters/{letter_id}/replay"),
    # apps (rows act on app `lms` and account `oa`, which need not exist)
    ConsoleCase("GET", "/console/apps", "apps:read"),
    ConsoleCase("POST", "/console/apps", "apps:manage", {"name": "", "channels": "inbox"}),
    ConsoleCase("POST", "/console/apps/lms/key", "apps:manage", route="/console/apps/{name}/key"),
    ConsoleCase("POST", "/console/apps/lms/enable", "apps:manage", route="/console/apps/{name}/enable"),
    ConsoleCase("POST", "/console/apps/lms/disable", "apps:manage", route="/console/apps/{name}/disable"),
    ConsoleCase("POST", "/console/apps/lms/channels", "apps:manage", {"channels": "inbox"},
                route="/console/apps/{name}/channels"),
    # channels
    ConsoleCase("GET", "/console/channels", "channels:read"),
    ConsoleCase("POST", "/console/channels", "channels:manage", {"code": ""}),
    ConsoleCase("POST", "/console/channels/oa/enable", "channels:manage",
                route="/console/channels/{code}/enable"),
    ConsoleCase("POST", "/console/channels/oa/disable", "channels:manage",
                route="/console/channels/{code}/disable"),
    ConsoleCase("POST", "/console/channels/oa/secrets", "channels:manage", {"name": "secret", "value": "v"},
                route="/console/channels/{code}/secrets"),
    ConsoleCase("POST", "/console/channels/oa/apps/lms", "channels:manage", {"allowed": "yes"},
                route="/console/channels/{code}/apps/{app}"),
    # people (person `u1` need not exist)
    ConsoleCase("GET", "/console/people", "people:read"),
    ConsoleCase("GET", "/console/people/u1", "people:read", route="/console/people/{user_id}"),
    ConsoleCase("POST", "/console/people/u1/tags", "people:write", {"tags": "a"},
                route="/console/people/{user_id}/tags"),
    ConsoleCase("POST", "/console/people/u1/unsubscribe", "people:manage", {"category": "marketing"},
                route="/console/people/{user_id}/unsubscribe"),
    ConsoleCase("POST", "/console/people/u1/resubscribe", "people:manage", {"category": "marketing"},
                route="/console/people/{user_id}/resubscribe"),
    # segments (segment `s1` need not exist)
    ConsoleCase("GET", "/console/segments", "segments:read"),
    ConsoleCase("GET", "/console/segments/new", "segments:manage"),
    ConsoleCase("GET", "/console/segments/s1", "segments:read", route="/console/segments/{name}"),
    ConsoleCase("GET", "/console/segments/s1/preview", "segments:read",
                route="/console/segments/{name}/preview"),
    ConsoleCase("POST", "/console/segments", "segments:manage", {"name": "s1", "app": "*"}),
    # uploads (upload `up1` need not exist)
    ConsoleCase("GET", "/console/uploads", "uploads:manage"),
    ConsoleCase("POST", "/console/uploads", "uploads:manage", {"app": "lms"}),
    ConsoleCase("GET", "/console/uploads/up1", "uploads:manage", route="/console/uploads/{upload_id}"),
    ConsoleCase("POST", "/console/uploads/up1/remove", "uploads:manage",
                route="/console/uploads/{upload_id}/remove"),
    # templates (no_such: the 404 page still shows the check let it through)
    ConsoleCase("GET", "/console/templates", "templates:read"),
    ConsoleCase("GET", "/console/templates/new", "templates:edit"),
    ConsoleCase("POST", "/console/templates/new", "templates:edit", {"name": "", "comment": "x"}),
    ConsoleCase("GET", "/console/templates/no_such", "templates:read", route="/console/templates/{name}"),
    ConsoleCase("GET", "/console/templates/no_such/edit", "templates:edit",
                route="/console/templates/{name}/edit"),
    ConsoleCase("POST", "/console/templates/no_such/versions", "templates:edit",
                route="/console/templates/{name}/versions"),
    ConsoleCase("GET", "/console/templates/no_such/versions/1", "templates:read",
                route="/console/templates/{name}/versions/{number}"),
    ConsoleCase("GET", "/console/templates/no_such/diff?from=1&to=2", "templates:read",
                route="/console/templates/{name}/diff"),
    ConsoleCase("POST", "/console/templates/no_such/versions/1/publish", "templates:publish",
                route="/console/templates/{name}/versions/{number}/publish"),
    # rules
    ConsoleCase("GET", "/console/rules", "templates:read"),
    ConsoleCase("POST", "/console/rules/explain", "people:read", {"user": ""}),
    ConsoleCase("POST", "/console/rules/simulate", "statistics:read", {"since": "soon"}),
    # analytics
    ConsoleCase("GET", "/console/analytics", "statistics:read"),
    ConsoleCase("GET", "/console/analytics/funnel.csv", "statistics:read"),
    ConsoleCase("GET", "/console/analytics/variants", "statistics:read"),
    ConsoleCase("GET", "/console/analytics/variants.csv?rule=r1", "statistics:read",
                route="/console/analytics/variants.csv"),
)

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
    # audit
    ConsoleCase("GET", "/console/audit", "audit:read"),
    # dead letters
    ConsoleCase("GET", "/console/dead-letters", "dead_letters:read"),
    ConsoleCase("GET", "/console/dead-letters/0-0", "dead_letters:read",
                route="/console/dead-letters/{letter_id}"),
    ConsoleCase("POST", "/console/dead-letters/0-0/replay", "dead_letters:replay",
                route="/console/dead-letters/{letter_id}/replay"),
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

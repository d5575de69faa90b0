"""Who may do what: the permission vocabulary, the built-in roles, and the principal a request acts as.

A permission is a plain name, `module:action`, as the requirements' 功能模块 (send, templates,
statistics...) divide the console. A role is a set of permissions. An operator holds grants: a role
over a scope of upstream apps (`*` = every app). An app key holds app powers only, over its own app; an
end-user token holds its user's own inbox and consent, within the app that minted it. Every endpoint
names the one permission it needs (`api.access`), and one function answers the question, so a test can
walk every endpoint with every role as a table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

# The catalog: every permission an endpoint may ask for. Scoped ones are checked against the app the
# request acts on; global ones (operators, roles, audit...) only against `*` grants.
PERMISSIONS: dict[str, str] = {
    # app powers (an app key holds exactly these, on its own app)
    "events:send": "send events and compose messages for the app",
    "conversions:report": "report business outcomes for the app",
    # modules of an upstream app (功能模块)
    "templates:read": "read templates and their versions",
    "templates:edit": "create and edit templates",
    "statistics:read": "read reports, funnels and message traces",
    "approvals:decide": "approve or reject held messages and template versions",
    "approvals:manage": "create, change and remove approval policies",
    "apps:read": "list upstream apps",
    "apps:manage": "register, disable, enable, rotate the key of and remove upstream apps",
    "channels:read": "list downstream channel accounts (secrets masked)",
    "channels:manage": "create, switch and authorise channel accounts, set their secrets",
    "people:read": "read a person's profile, consent, inbox and history",
    "people:manage": "change a person's consent, blacklist and whitelist entries",
    "people:write": "create, change and delete people, their addresses, attributes and tags; import them",
    "segments:read": "list segments, their definitions, counts and samples",
    "segments:manage": "create, change and remove segments",
    "uploads:manage": "upload recipient lists (CSV, XLSX) for a message, read and remove them",
    "templates:publish": "make a template version live (through approval where a policy asks for it)",
    "campaigns:read": "list campaigns, their progress, reach and conversion",
    "campaigns:manage": "compose, submit, cancel and recall campaigns",
    "budgets:read": "read budgets and what was spent",
    "budgets:manage": "set budgets",
    "dead_letters:read": "list and inspect dead-lettered events",
    "dead_letters:replay": "replay dead-lettered events",
    # global: only a grant over every app (`*`) carries these
    "data_rights:export": "export everything held about one person",
    "data_rights:erase": "delete or anonymise everything held about one person",
    "operators:read": "list operators and their roles",
    "operators:manage": "create, lock, unlock and remove operators; grant and revoke roles",
    "roles:manage": "create, change and remove custom roles",
    "audit:read": "query the audit log",
}
GLOBAL_PERMISSIONS: frozenset[str] = frozenset(
    {"data_rights:export", "data_rights:erase", "operators:read", "operators:manage", "roles:manage",
     "audit:read", "people:write"}
)
# An app also reads its own funnel and message traces, as it did before operators existed.
APP_POWERS: frozenset[str] = frozenset({"events:send", "conversions:report", "statistics:read"})
ALL_APPS = "*"

BUILT_IN_ROLES: dict[str, frozenset[str]] = {
    "administrator": frozenset(PERMISSIONS),
    "app_owner": frozenset(
        {"events:send", "conversions:report", "templates:read", "templates:edit", "statistics:read",
         "apps:read", "apps:manage", "channels:read", "channels:manage", "people:read", "budgets:read",
         "budgets:manage", "dead_letters:read", "dead_letters:replay", "approvals:manage",
         "segments:read", "segments:manage", "uploads:manage", "templates:publish", "campaigns:read",
         "campaigns:manage"}
    ),
    "sender": frozenset({"events:send", "templates:read", "statistics:read", "apps:read", "segments:read",
                         "uploads:manage", "campaigns:read", "campaigns:manage"}),
    "template_editor": frozenset({"templates:read", "templates:edit", "templates:publish", "apps:read"}),
    "approver": frozenset({"approvals:decide", "templates:read", "statistics:read", "apps:read",
                           "campaigns:read"}),
    "analyst": frozenset({"statistics:read", "apps:read", "channels:read", "budgets:read", "segments:read",
                          "campaigns:read"}),
    "auditor": frozenset({"audit:read", "operators:read", "apps:read", "channels:read", "statistics:read",
                          "campaigns:read"}),
}

PrincipalKind = Literal["operator", "app", "user"]


@dataclass(frozen=True)
class Grant:
    """A role's permissions over a scope of upstream apps (`*` = every app, present and future)."""

    role: str
    permissions: frozenset[str]
    apps: frozenset[str] = frozenset({ALL_APPS})

    def allows(self, permission: str, app: str | None) -> bool:
        if permission not in self.permissions:
            return False
        if ALL_APPS in self.apps:
            return True
        # A global permission, or a question about no app in particular, needs a grant over every app.
        return permission not in GLOBAL_PERMISSIONS and app is not None and app in self.apps


@dataclass(frozen=True)
class Principal:
    """Whoever a request acts as: an operator (by its grants), an app (app powers on itself), or an end
    user (their own inbox and consent, `user_id`, within the app that minted the token)."""

    kind: PrincipalKind
    name: str
    grants: tuple[Grant, ...] = ()
    user_id: str | None = None
    roles: tuple[str, ...] = field(default=())

    def allows(self, permission: str, app: str | None = None) -> bool:
        """Whether this principal holds `permission` for `app` (None: not about one app)."""
        if permission not in PERMISSIONS:
            raise KeyError(f"unknown permission {permission!r}")
        return any(grant.allows(permission, app) for grant in self.grants)

    def apps_for(self, permission: str) -> frozenset[str]:
        """The apps on which this principal holds `permission` (`{'*'}` when every app)."""
        scopes = [grant.apps for grant in self.grants if permission in grant.permissions]
        if any(ALL_APPS in apps for apps in scopes):
            return frozenset({ALL_APPS})
        return frozenset().union(*scopes) if scopes else frozenset()


def app_principal(app: str) -> Principal:
    """An upstream app's key: app powers only, on its own app."""
    return Principal(kind="app", name=app, grants=(Grant("app", APP_POWERS, frozenset({app})),))

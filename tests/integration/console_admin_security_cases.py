"""Every route of the console's admin pages (apps, channel accounts, people, segments, uploads) with the
permission it declares and a sample request: the table `test_console_admin_security.py` walks without
a session, without the CSRF token and with an operator who holds nothing. A route missing here fails
that test, so a new page route cannot ship without its check."""

from __future__ import annotations

from dataclasses import dataclass

PREFIXES = ("/console/apps", "/console/channels", "/console/people", "/console/segments", "/console/uploads")


@dataclass(frozen=True)
class ConsoleCase:
    method: str
    path: str
    permission: str
    route: str = ""
    """The route's template when `path` fills its parameters."""
    form: tuple[tuple[str, str], ...] = ()

    @property
    def template(self) -> str:
        return self.route or self.path


CASES: tuple[ConsoleCase, ...] = (
    # --- apps -------------------------------------------------------------------------------------
    ConsoleCase("GET", "/console/apps", "apps:read"),
    ConsoleCase("POST", "/console/apps", "apps:manage", form=(("name", "x"), ("channels", "inbox"))),
    ConsoleCase("POST", "/console/apps/lms/key", "apps:manage", "/console/apps/{name}/key"),
    ConsoleCase("POST", "/console/apps/lms/enable", "apps:manage", "/console/apps/{name}/enable"),
    ConsoleCase("POST", "/console/apps/lms/disable", "apps:manage", "/console/apps/{name}/disable"),
    ConsoleCase("POST", "/console/apps/lms/channels", "apps:manage", "/console/apps/{name}/channels",
                form=(("channels", "inbox"),)),
    # --- channel accounts -------------------------------------------------------------------------
    ConsoleCase("GET", "/console/channels", "channels:read"),
    ConsoleCase("POST", "/console/channels", "channels:manage", form=(("code", "x"),)),
    ConsoleCase("POST", "/console/channels/oa/enable", "channels:manage", "/console/channels/{code}/enable"),
    ConsoleCase("POST", "/console/channels/oa/disable", "channels:manage",
                "/console/channels/{code}/disable"),
    ConsoleCase("POST", "/console/channels/oa/secrets", "channels:manage", "/console/channels/{code}/secrets",
                form=(("name", "secret"), ("value", "v"))),
    ConsoleCase("POST", "/console/channels/oa/apps/lms", "channels:manage",
                "/console/channels/{code}/apps/{app}", form=(("allowed", "yes"),)),
    # --- people -----------------------------------------------------------------------------------
    ConsoleCase("GET", "/console/people", "people:read"),
    ConsoleCase("GET", "/console/people/u1", "people:read", "/console/people/{user_id}"),
    ConsoleCase("POST", "/console/people/u1/tags", "people:write", "/console/people/{user_id}/tags",
                form=(("tags", "a"),)),
    ConsoleCase("POST", "/console/people/u1/unsubscribe", "people:manage",
                "/console/people/{user_id}/unsubscribe", form=(("category", "marketing"),)),
    ConsoleCase("POST", "/console/people/u1/resubscribe", "people:manage",
                "/console/people/{user_id}/resubscribe", form=(("category", "marketing"),)),
    # --- segments ---------------------------------------------------------------------------------
    ConsoleCase("GET", "/console/segments", "segments:read"),
    ConsoleCase("GET", "/console/segments/new", "segments:manage"),
    ConsoleCase("GET", "/console/segments/s1", "segments:read", "/console/segments/{name}"),
    ConsoleCase("GET", "/console/segments/s1/preview", "segments:read", "/console/segments/{name}/preview"),
    ConsoleCase("POST", "/console/segments", "segments:manage", form=(("name", "s1"), ("app", "*"))),
    # --- uploads ----------------------------------------------------------------------------------
    ConsoleCase("GET", "/console/uploads", "uploads:manage"),
    ConsoleCase("POST", "/console/uploads", "uploads:manage", form=(("app", "lms"),)),
    ConsoleCase("GET", "/console/uploads/up1", "uploads:manage", "/console/uploads/{upload_id}"),
    ConsoleCase("POST", "/console/uploads/up1/remove", "uploads:manage",
                "/console/uploads/{upload_id}/remove"),
)

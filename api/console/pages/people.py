"""People (用户): search by id prefix and tag, and one person's page: profile, addresses (and which each
channel uses), tags, attributes, consent and opt-ins, inbox (read-only), and message history from
ClickHouse with the "why" of each message (the trace `switchboard why` prints).

Reading takes `people:read` over every app, as `/v1/people` does (a person is not one app's); the
history takes `statistics:read` too, on the apps whose messages are shown. Changing tags takes
`people:write` and goes through `api.people.changed_person` and its audit record, as `PATCH` does;
unsubscribing and resubscribing take `people:manage` and run `api.consent`'s own functions.
"""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.
import re
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError

from api.analytics_reader import AnalyticsUnavailable
from api.consent import UnsubscribeRequest, resubscribe_person, unsubscribe_person
from api.console.context import ConsolePage
from api.console.pages.refusals import FormErrors, refusal, status_of
from api.console.render import render
from api.console.session import authorize, console_principal
from api.deps import ApiDeps
from api.people import PersonError, PersonPatch, address_rows, audit_person, changed_person, described
from api.trace import MessageTrace
from records.vocabulary import CATEGORIES, CHANNELS
from settings.permissions import ALL_APPS, Principal
from state.consent import ConsentStore
from state.users import User, UserDirectory

PATH = "/console/people"
PAGE_SIZE = 50
HISTORY = 20
_ID = re.compile(r"^[A-Za-z0-9_.:\-]{0,128}$")
Reader = Annotated[Principal, Depends(console_principal("people:read"))]
Writer = Annotated[Principal, Depends(console_principal("people:write"))]
ConsentManager = Annotated[Principal, Depends(console_principal("people:manage"))]


def people_router(deps: ApiDeps) -> APIRouter:
    router = APIRouter(prefix="/people")

    def directory() -> UserDirectory:
        if deps.people is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "the people directory is not kept here")
        return deps.people

    @router.get("")
    async def search(request: Request, principal: Reader, q: Annotated[str, Query(max_length=128)] = "",
                     tag: Annotated[str, Query(max_length=128)] = "",
                     after: Annotated[str, Query(max_length=128)] = "") -> Response:
        authorize(request, principal, "people:read", ALL_APPS)
        errors: FormErrors = {}
        for field, value in (("q", q), ("tag", tag), ("after", after)):
            if not _ID.match(value):
                errors[field] = "letters, digits and _ . : - only, up to 128"
        found: list[dict[str, Any]] = []
        following = None
        if not errors:
            people = directory()
            ids = await people.listing(after=after, limit=PAGE_SIZE + 1, tag=tag or None, prefix=q)
            by_id = await people.get_many(ids[:PAGE_SIZE])
            found = [described(by_id[i]) for i in ids[:PAGE_SIZE] if i in by_id]
            following = ids[PAGE_SIZE - 1] if len(ids) > PAGE_SIZE else None
        return render(request, "people/search.html", principal, people=found, q=q, tag=tag,
                      following=following, errors=errors, status_code=422 if errors else 200)

    async def person_page(request: Request, principal: Principal, user: User, *, status_code: int = 200,
                          errors: FormErrors | None = None) -> Response:
        history, history_note = await _history(deps, principal, user.user_id)
        consent = await deps.consent.consent(user.user_id) if deps.consent is not None else None
        inbox = await deps.inbox.list(user.user_id, limit=20)
        unread = await deps.inbox.unread_count(user.user_id)
        return render(
            request, "people/person.html", principal, status_code=status_code, person=described(user),
            addresses=address_rows(user), consent=consent, inbox=inbox, unread=unread, history=history,
            history_note=history_note, may_write=principal.allows("people:write", ALL_APPS),
            may_manage=deps.consent is not None and principal.allows("people:manage", ALL_APPS),
            categories=CATEGORIES, channels=CHANNELS, errors=errors or {},
        )

    @router.get("/{user_id}")
    async def person(request: Request, user_id: str, principal: Reader) -> Response:
        authorize(request, principal, "people:read", ALL_APPS)
        return await person_page(request, principal, await _found(directory(), user_id))

    @router.post("/{user_id}/tags")
    async def tags(request: Request, user_id: str, principal: Writer) -> Response:
        authorize(request, principal, "people:write", ALL_APPS)
        before = await _found(directory(), user_id)
        text = str((await request.form()).get("tags", ""))
        wanted = [tag for tag in re.split(r"[\s,，]+", text) if tag]
        try:
            after = changed_person(before, PersonPatch(tags=wanted), datetime.now(UTC))
        except ValidationError as exc:
            return await person_page(request, principal, before, status_code=422, errors=refusal(exc))
        except PersonError as exc:
            return await person_page(request, principal, before, status_code=422,
                                     errors={"tags": exc.message})
        await audit_person(deps, request, principal, "person.update", user_id, before, after)
        await directory().upsert([after])
        return RedirectResponse(f"{PATH}/{user_id}", status.HTTP_303_SEE_OTHER)

    @router.post("/{user_id}/unsubscribe")
    async def unsubscribe(request: Request, user_id: str, principal: ConsentManager) -> Response:
        authorize(request, principal, "people:manage", ALL_APPS)
        user = await _found(directory(), user_id)
        form = await request.form()
        try:
            body = UnsubscribeRequest.model_validate({
                "user_id": user_id, "category": form.get("category") or None,
                "channel": form.get("channel") or None, "source": "console",
            })
            await unsubscribe_person(deps, consent(), request, principal, body)
        except (ValidationError, HTTPException) as exc:
            return await person_page(request, principal, user, status_code=status_of(exc),
                                     errors={f"consent.{k}": v for k, v in refusal(exc).items()})
        return RedirectResponse(f"{PATH}/{user_id}#consent", status.HTTP_303_SEE_OTHER)

    @router.post("/{user_id}/resubscribe")
    async def resubscribe(request: Request, user_id: str, principal: ConsentManager) -> Response:
        authorize(request, principal, "people:manage", ALL_APPS)
        await _found(directory(), user_id)
        form = await request.form()
        category, channel = str(form.get("category") or ""), str(form.get("channel") or "")
        await resubscribe_person(deps, consent(), request, principal, user_id,
                                 category or None, channel or None)
        return RedirectResponse(f"{PATH}/{user_id}#consent", status.HTTP_303_SEE_OTHER)

    def consent() -> ConsentStore:
        if deps.consent is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "consent is not kept in this deployment")
        return deps.consent

    return router


async def _found(people: UserDirectory, user_id: str) -> User:
    user = await people.get(user_id) if _ID.match(user_id) else None
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"no person {user_id!r}")
    return user


async def _history(deps: ApiDeps, principal: Principal, user_id: str) -> tuple[list[MessageTrace], str]:
    """The person's newest messages with their traces, only of the apps whose statistics the operator
    reads; with a note when there is nothing to show and why (no analytics, no permission, unavailable)."""
    if deps.analytics is None:
        return [], "history.no_analytics"
    scope = principal.apps_for("statistics:read")
    if not scope:
        return [], "history.no_permission"
    tracer = deps.analytics.tracer
    apps: list[str | None] = [None] if ALL_APPS in scope else [*sorted(scope)]
    try:
        traces: list[MessageTrace] = []
        for app in apps:
            ids = (await tracer.messages_of(user_id, app=app))[:HISTORY]
            traces += await tracer.trace(ids, app=app)
    except (AnalyticsUnavailable, OSError):
        # The reader's message may name the server: the page says only that history is unavailable.
        return [], "history.unavailable"
    traces.sort(key=_newest, reverse=True)
    return traces[:HISTORY], "" if traces else "history.none"


def _newest(trace: MessageTrace) -> datetime:
    moments = [t.at for t in trace.transitions]
    return max(moments) if moments else datetime.min.replace(tzinfo=UTC)


PAGE = ConsolePage("people", PATH, "people:read", people_router)

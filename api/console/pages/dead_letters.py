"""Dead letters: list and inspect (`dead_letters:read`: payloads with secret-named fields masked, each
reading audited), replay as kept or corrected (`dead_letters:replay`). Only the letters of the apps the
operator holds the permission on, as `/v1/dead-letters` shows them: the same filter, lookup, audit and
replay (`api.dead_letters`)."""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.
import json
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Form, HTTPException, Path, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api.console.context import ConsolePage
from api.console.forms import FormError, refusal
from api.console.render import render
from api.console.session import authorize, console_principal
from api.dead_letter_replay import inspected, read_record, summary
from api.dead_letters import actor_of, find_letter, letter_filter, may_act, replay_one, shelved_or_503
from api.deps import ApiDeps
from processors.dead_letter_shelf import STAGES
from records.audit import MASK
from settings.permissions import Principal

PERMISSION = "dead_letters:read"
PAGE_SIZE = 50
LetterId = Annotated[str, Path(pattern=r"^\d+-\d+$", max_length=40)]
Filter = Annotated[str, Query(max_length=500)]


def dead_letters_router(deps: ApiDeps) -> APIRouter:
    router = APIRouter()
    Readers = Annotated[Principal, Depends(console_principal(PERMISSION))]
    Replayers = Annotated[Principal, Depends(console_principal("dead_letters:replay"))]

    @router.get("/dead-letters", response_class=HTMLResponse, include_in_schema=False)
    async def letters(request: Request, principal: Readers, reason: Filter = "", app: Filter = "",
                      stage: Filter = "", since: Filter = "",
                      offset: Annotated[int, Query(ge=0)] = 0) -> HTMLResponse:
        shelf = deps.dead_letters
        filters = {"reason": reason, "app": app, "stage": stage, "since": since}
        if app:
            authorize(request, principal, PERMISSION, app)
        found: list[dict[str, Any]] = []
        error = problem = ""
        try:
            wanted = letter_filter(principal, PERMISSION, reason, app or None, stage or None, since)
            if shelf is None:
                problem = "unavailable"
            else:
                found = [summary(s) for s in await shelved_or_503(shelf.letters(wanted))]
        except RequestValidationError as exc:
            error = refusal(exc).message
        except HTTPException:
            problem = "unavailable"
        kept = {k: v for k, v in filters.items() if v}
        pages = {
            "previous": "/console/dead-letters?" + urlencode({**kept, "offset": max(0, offset - PAGE_SIZE)})
            if offset else "",
            "next": "/console/dead-letters?" + urlencode({**kept, "offset": offset + PAGE_SIZE})
            if offset + PAGE_SIZE < len(found) else "",
        }
        return render(
            request, "dead_letters/list.html", principal, letters=found[offset : offset + PAGE_SIZE],
            matched=len(found), filters=filters, stages=sorted({*STAGES.values(), "other"}), error=error,
            problem=problem, pages=pages,
            status_code=status.HTTP_422_UNPROCESSABLE_CONTENT if error else status.HTTP_200_OK,
        )

    async def letter_page(request: Request, principal: Principal, letter_id: str,
                          error: FormError | None = None, edited: str = "") -> HTMLResponse:
        shelf = deps.dead_letters
        if shelf is None:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "dead letters are not served here")
        try:
            shelved = await find_letter(shelf, principal, PERMISSION, letter_id)
        except HTTPException as exc:
            return render(request, "dead_letters/letter.html", principal, letter=None,
                          missing=str(exc.detail), status_code=exc.status_code, payload="", may_replay=False,
                          error=None, edited="", done="")
        # A payload is a person's data: who read which letter is audited before it is shown.
        await deps.publisher.publish_audit(read_record(shelved, actor_of(principal, request)))
        letter = inspected(shelved)
        payload = letter["payload"]
        is_json = letter["payload_kind"] == "json"
        shown = json.dumps(payload, ensure_ascii=False, indent=2) if is_json else payload
        done = request.query_params.get("done", "")
        return render(
            request, "dead_letters/letter.html", principal, letter=letter, missing="", payload=shown,
            may_replay=may_act(principal, "dead_letters:replay", shelved.letter.app), error=error,
            edited=edited, done=done if done in ("published", "duplicate") else "",
            status_code=error.status_code if error else status.HTTP_200_OK,
        )

    @router.get("/dead-letters/{letter_id}", response_class=HTMLResponse, include_in_schema=False)
    async def letter(request: Request, principal: Readers, letter_id: LetterId) -> HTMLResponse:
        return await letter_page(request, principal, letter_id)

    @router.post("/dead-letters/{letter_id}/replay", include_in_schema=False)
    async def replay(request: Request, principal: Replayers, letter_id: LetterId,
                     event: Annotated[str, Form(max_length=256 * 1024)] = "") -> Response:
        shelf = deps.dead_letters
        if shelf is None:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "dead letters are not served here")
        edited: dict[str, Any] | None = None
        if event.strip():
            try:
                parsed = json.loads(event)
            except ValueError as exc:
                error = FormError(f"event: not valid JSON ({exc})", "event")
                return await letter_page(request, principal, letter_id, error, event)
            if not isinstance(parsed, dict):
                error = FormError("event: give the corrected event as a JSON object", "event")
                return await letter_page(request, principal, letter_id, error, event)
            if MASK in json.dumps(parsed, ensure_ascii=False):
                # The shown payload has its secrets masked: replaying the mask would send it for real.
                error = FormError(f"event: replace every masked value ({MASK}) before replaying", "event")
                return await letter_page(request, principal, letter_id, error, event)
            edited = parsed
        try:
            result = await replay_one(deps, shelf, deps.accepted_events, request, principal, letter_id,
                                      edited)
        except (HTTPException, RequestValidationError) as exc:
            return await letter_page(request, principal, letter_id, refusal(exc), event)
        done = "duplicate" if result.get("duplicate") else "published"
        return RedirectResponse(f"/console/dead-letters/{letter_id}?done={done}", status.HTTP_303_SEE_OTHER)

    return router


PAGE = ConsolePage("dead_letters", "/console/dead-letters", PERMISSION, dead_letters_router)

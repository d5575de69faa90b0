"""Send (`campaigns:read` to see, `campaigns:manage` to compose): the campaign list, the composer with
its live preview (per channel, SMS segments, recipients and cost), a campaign's page with its progress
(refreshed by htmx) and its submit, cancel and recall buttons.

Every action goes through `api.campaign_flow`, as `/v1/campaigns` does: the same checks, the same
refusals (shown next to the field, or above the form), the same audit records.
"""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Path, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.datastructures import UploadFile  # what the form parser makes (FastAPI's is a subclass)

from api import campaign_flow as flow
from api.approval_service import DECIDE
from api.campaign_service import CampaignDesk
from api.console.context import ConsolePage
from api.console.pages.send_choices import composer_choices, composer_preview
from api.console.pages.send_form import TARGETS, TIMINGS, ComposerForm, composition_of, refusal_errors
from api.console.render import render
from api.console.session import ConsoleForbidden, console_principal
from api.deps import ApiDeps
from api.uploads import stored_upload
from records.vocabulary import CATEGORIES, CHANNELS, PRIORITIES
from settings.permissions import Principal
from state.approvals import ApprovalItem, approval_id_for
from state.campaigns import Campaign, app_of
from state.uploads import DEFAULT_TTL_HOURS

READ = "campaigns:read"
MANAGE = "campaigns:manage"
_ID = r"^[A-Za-z0-9_.:\-]{1,160}$"
_POLL_SECONDS = 3
_INVALID = status.HTTP_422_UNPROCESSABLE_CONTENT
# A form field's label among the page's words, for the preview's list of what is still wrong.
LABELS = {name: f"field.{name}" for name in (
    "app", "name", "target", "channels", "timing", "send_at", "utc_offset", "pace_per_second", "strategy",
    "priority", "category", "template", "data")} | {
    name: f"target.{name}" for name in ("tags", "user_ids", "segment", "addresses", "upload")}


def send_router(deps: ApiDeps) -> APIRouter:
    router = APIRouter(prefix="/send")
    Reader = Annotated[Principal, Depends(console_principal(READ))]
    Manager = Annotated[Principal, Depends(console_principal(MANAGE))]
    CampaignId = Annotated[str, Path(pattern=_ID)]

    def desk_of() -> CampaignDesk:
        if deps.campaigns is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "campaigns are not configured")
        return deps.campaigns

    async def found(principal: Principal, permission: str, campaign_id: str) -> Campaign:
        """The campaign, or the 403 page naming the permission and app (the API's own check first)."""
        try:
            return await flow.found(deps, desk_of(), principal, permission, campaign_id)
        except HTTPException as exc:
            if exc.status_code == status.HTTP_403_FORBIDDEN:
                raise ConsoleForbidden(principal, permission, app_of(campaign_id)) from None
            raise

    async def composer(request: Request, principal: Principal, form: ComposerForm,
                       errors: dict[str, str] | None = None, status_code: int = 200) -> HTMLResponse:
        return render(
            request, "send/compose.html", principal, status_code=status_code, form=form,
            errors=errors or {}, choices=await composer_choices(deps, principal), targets=TARGETS,
            timings=TIMINGS, channels=CHANNELS, priorities=PRIORITIES, categories=CATEGORIES,
            preview=await composer_preview(deps, desk_of(), principal, form), labels=LABELS,
        )

    async def approval_of(campaign: Campaign) -> ApprovalItem | None:
        """The approval holding the campaign's event, if a policy held it (its id follows from the event)."""
        if deps.approvals is None or campaign.submitted_at is None:
            return None
        subject = f"{campaign.app}:{campaign.event_id}"
        return await deps.approvals.store.get(approval_id_for("message", subject))

    async def campaign_page(request: Request, principal: Principal, campaign: Campaign,
                            message: str = "", status_code: int = 200) -> HTMLResponse:
        desk = desk_of()
        progress = await flow.read_progress(deps, [campaign])
        shown = await flow.view(deps, desk, campaign, progress=progress, with_estimate=True)
        shown.setdefault("progress", None)
        return render(request, "send/campaign.html", principal, status_code=status_code, campaign=shown,
                      may_manage=principal.allows(MANAGE, campaign.app), message=message,
                      poll_seconds=_POLL_SECONDS, approval=await approval_of(campaign),
                      may_decide=principal.allows(DECIDE, campaign.app))

    @router.get("", response_class=HTMLResponse, include_in_schema=False)
    async def campaigns(request: Request, principal: Reader) -> HTMLResponse:
        shown = await flow.listing(deps, desk_of(), principal, None, None, 100)
        return render(request, "send/list.html", principal, campaigns=shown,
                      may_compose=bool(principal.apps_for(MANAGE)))

    @router.get("/new", response_class=HTMLResponse, include_in_schema=False)
    async def new_campaign(request: Request, principal: Manager) -> HTMLResponse:
        choices = await composer_choices(deps, principal)
        form = ComposerForm(app=choices.apps[0] if len(choices.apps) == 1 else "")
        return await composer(request, principal, form)

    @router.post("/preview", response_class=HTMLResponse, include_in_schema=False)
    async def preview(request: Request, principal: Manager) -> HTMLResponse:
        """The htmx fragment re-rendered as the form changes: per channel, segments, count and cost."""
        form = await _posted(request)
        shown = await composer_preview(deps, desk_of(), principal, form)
        return render(request, "send/preview.html", principal, preview=shown, form=form, labels=LABELS)

    @router.post("/new", response_class=HTMLResponse, include_in_schema=False)
    async def compose(request: Request, principal: Manager) -> Response:
        """Save the draft; with `action=send` submit it too. A refusal shows the form again."""
        form = await _posted(request)
        parsed = composition_of(form)
        if parsed.composition is None:
            return await composer(request, principal, form, parsed.errors, _INVALID)
        desk = desk_of()
        try:
            campaign = await flow.create(deps, desk, request, principal, parsed.composition)
        except (RequestValidationError, HTTPException) as exc:
            code = status.HTTP_422_UNPROCESSABLE_CONTENT if isinstance(exc, RequestValidationError) else (
                exc.status_code)
            return await composer(request, principal, form, refusal_errors(exc, form), code)
        if (await request.form()).get("action") == "send":
            try:
                campaign = await flow.submit(deps, desk, request, principal, campaign)
            except (RequestValidationError, HTTPException) as exc:  # kept as a draft, the refusal shown
                message = "; ".join(refusal_errors(exc, form).values())
                code = exc.status_code if isinstance(exc, HTTPException) else _INVALID
                return await campaign_page(request, principal, campaign, message, code)
        return RedirectResponse(f"/console/send/{campaign.id}", status.HTTP_303_SEE_OTHER)

    @router.post("/upload", response_class=HTMLResponse, include_in_schema=False)
    async def upload(request: Request, principal: Manager) -> HTMLResponse:
        """A recipient list through the uploads service (`uploads:manage` on the composer's app), then the
        composer again, as filled in, with the list chosen as the target."""
        if deps.uploads is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "uploads are not configured")
        async with request.form(max_files=1, max_fields=64) as posted:
            # The composer's own fields come along (its Upload button posts the whole form), so
            # nothing typed so far is lost.
            form = ComposerForm.of(posted, [c for c in posted.getlist("channels") if isinstance(c, str)])
            file, app = posted.get("file"), form.app
            if not app:
                return await composer(request, principal, form, {"app": "choose the list's app"}, _INVALID)
            if not principal.allows("uploads:manage", app):
                raise ConsoleForbidden(principal, "uploads:manage", app)
            if not isinstance(file, UploadFile) or not file.filename:
                chosen = {"file": "choose a CSV or XLSX file"}
                return await composer(request, principal, form, chosen, _INVALID)
            try:
                stored = await stored_upload(deps, deps.uploads, request, principal, app, None,
                                             DEFAULT_TTL_HOURS, file)
            except RequestValidationError as exc:
                return await composer(request, principal, form, refusal_errors(exc, form), _INVALID)
        form.target = "upload"
        form.upload = stored.upload_id
        return await composer(request, principal, form)

    @router.get("/{campaign_id}", response_class=HTMLResponse, include_in_schema=False)
    async def show(request: Request, principal: Reader, campaign_id: CampaignId) -> HTMLResponse:
        return await campaign_page(request, principal, await found(principal, READ, campaign_id))

    @router.get("/{campaign_id}/progress", response_class=HTMLResponse, include_in_schema=False)
    async def progress(request: Request, principal: Reader, campaign_id: CampaignId) -> HTMLResponse:
        """The htmx fragment the campaign's page polls: state and progress."""
        campaign = await found(principal, READ, campaign_id)
        counted = await flow.read_progress(deps, [campaign])
        shown = {"progress": None} | await flow.view(deps, desk_of(), campaign, progress=counted)
        return render(request, "send/progress.html", principal, campaign=shown, poll_seconds=_POLL_SECONDS,
                      may_manage=principal.allows(MANAGE, campaign.app), approval=await approval_of(campaign),
                      may_decide=principal.allows(DECIDE, campaign.app))

    @router.post("/{campaign_id}/{action}", response_class=HTMLResponse, include_in_schema=False)
    async def act(request: Request, principal: Manager, campaign_id: CampaignId, action: str) -> Response:
        """Submit, cancel or recall; a refusal (409: not possible in its state) is shown on its page."""
        before = await found(principal, MANAGE, campaign_id)
        desk = desk_of()
        try:
            if action == "submit":
                await flow.submit(deps, desk, request, principal, before)
            elif action == "cancel":
                await flow.cancel(deps, desk, request, principal, before)
            elif action == "recall":
                await flow.recalled(deps, desk, request, principal, before)
            else:
                raise HTTPException(status.HTTP_404_NOT_FOUND, f"no action {action!r}")
        except HTTPException as exc:
            if exc.status_code == status.HTTP_404_NOT_FOUND:
                raise
            current = await desk.store.get(campaign_id) or before
            return await campaign_page(request, principal, current, str(exc.detail), exc.status_code)
        except RequestValidationError as exc:
            message = "; ".join(str(e["msg"]) for e in exc.errors())
            current = await desk.store.get(campaign_id) or before
            return await campaign_page(request, principal, current, message,
                                       status.HTTP_422_UNPROCESSABLE_CONTENT)
        return RedirectResponse(f"/console/send/{campaign_id}", status.HTTP_303_SEE_OTHER)

    return router


async def _posted(request: Request) -> ComposerForm:
    form = await request.form()
    return ComposerForm.of(form, [c for c in form.getlist("channels") if isinstance(c, str)])


PAGE = ConsolePage("send", "/console/send", READ, send_router)

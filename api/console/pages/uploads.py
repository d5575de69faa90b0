"""Uploaded lists (上传名单): the live lists of the apps an operator manages, with their counts; upload a
CSV or XLSX through a file input, see its counts and row errors; remove one. Importing and removing run
`api.uploads.import_upload` and `remove_upload_audited`, as `/v1/uploads` does (the same checks, the same
`upload.add` and `upload.remove` audit records); everything takes `uploads:manage` on the list's app.
"""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from starlette.datastructures import UploadFile

from api.console.context import ConsolePage
from api.console.pages.refusals import refusal, status_of
from api.console.render import render
from api.console.session import authorize, console_principal
from api.deps import ApiDeps, UploadSettings
from api.uploads import PERMISSION, found_upload, import_upload, managed_uploads, remove_upload_audited
from settings.permissions import Principal
from state.uploads import DEFAULT_TTL_HOURS, MAX_TTL_HOURS, Upload

PATH = "/console/uploads"
ERRORS_SHOWN = 100
Manager = Annotated[Principal, Depends(console_principal(PERMISSION))]
_REFUSED = (HTTPException, RequestValidationError)


def uploads_router(deps: ApiDeps) -> APIRouter:
    router = APIRouter(prefix="/uploads")

    def settings() -> UploadSettings:
        if deps.uploads is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "uploads are not kept in this deployment")
        return deps.uploads

    async def listing_page(request: Request, principal: Principal, *, refused: Exception | None = None,
                           form: dict[str, str] | None = None) -> Response:
        uploads = await managed_uploads(settings().store, principal)
        return render(request, "uploads/list.html", principal, uploads=uploads, form=form or {},
                      errors=refusal(refused) if refused else {},
                      status_code=status_of(refused) if refused else 200,
                      default_ttl=DEFAULT_TTL_HOURS, max_ttl=MAX_TTL_HOURS)

    async def upload_page(request: Request, principal: Principal, upload: Upload, *,
                          status_code: int = 200) -> Response:
        errors = await settings().store.errors(upload.upload_id, 0, ERRORS_SHOWN)
        return render(request, "uploads/upload.html", principal, upload=upload, row_errors=errors,
                      status_code=status_code, shown=ERRORS_SHOWN)

    @router.get("")
    async def listing(request: Request, principal: Manager) -> Response:
        return await listing_page(request, principal)

    @router.post("")
    async def upload(request: Request, principal: Manager) -> Response:
        form = await request.form()
        given = {key: str(form.get(key) or "") for key in ("app", "kind", "ttl_hours")}
        try:
            chosen = form.get("file")
            if not isinstance(chosen, UploadFile) or not chosen.filename:
                # A browser sends an empty part when no file was chosen: say so at the field.
                raise RequestValidationError([{"loc": ("body", "file"), "type": "value_error",
                                               "msg": "choose a CSV or XLSX file"}])
            added = await import_upload(deps, settings(), request, principal, form)
        except _REFUSED as exc:
            return await listing_page(request, principal, refused=exc, form=given)
        return await upload_page(request, principal, added, status_code=status.HTTP_201_CREATED)

    @router.get("/{upload_id}")
    async def show(request: Request, upload_id: str, principal: Manager) -> Response:
        held = await settings().store.get(upload_id)
        if held is not None:  # another app's list: the console's 403 page, naming the permission and app
            authorize(request, principal, PERMISSION, held.app)
        found = await found_upload(deps.access, settings().store, principal, upload_id)
        return await upload_page(request, principal, found)

    @router.post("/{upload_id}/remove")
    async def remove(request: Request, upload_id: str, principal: Manager) -> Response:
        try:
            await remove_upload_audited(deps, settings().store, request, principal, upload_id)
        except _REFUSED as exc:
            return await listing_page(request, principal, refused=exc)
        return RedirectResponse(PATH, status.HTTP_303_SEE_OTHER)

    return router


PAGE = ConsolePage("uploads", PATH, PERMISSION, uploads_router)

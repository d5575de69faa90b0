"""Uploaded recipient lists for operators: upload a CSV or XLSX of phone numbers, emails or user ids, list,
show, read its row errors, remove. Everything takes `uploads:manage` on the list's app; an upload and a
removal are audit records (`upload.add`, `upload.remove`).

The file arrives as a multipart body, which Starlette spools to a temporary file (in memory only up to
1 MB); it is copied to a named file for the readers and deleted after. The body limit is
SWITCHBOARD_UPLOAD_MAX_BYTES (413 above it, `api/body_limit.py`).
"""

# No `from __future__ import annotations`: FastAPI reads these route signatures at runtime.
import asyncio
import re
import shutil
import tempfile
from pathlib import Path as FilePath
from typing import IO, Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request, status
from pydantic import BaseModel
from starlette.datastructures import FormData, UploadFile

from api.access import Access, audit_record
from api.deps import ApiDeps, UploadSettings
from api.problems import Problem, invalid
from api.upload_reader import UploadRefused, import_file, parse_kind
from settings.permissions import ALL_APPS, Principal
from state.uploads import DEFAULT_TTL_HOURS, MAX_TTL_HOURS, Upload, UploadKind, UploadStore

_NAME = re.compile(r"^[A-Za-z0-9_.:\-]{1,128}$")
_ID = r"^[A-Za-z0-9_.:\-]{1,128}$"
PERMISSION = "uploads:manage"

_MULTIPART = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file", "app"],
                    "properties": {
                        "file": {"type": "string", "format": "binary",
                                 "description": "CSV (UTF-8 or GBK) or XLSX, one recipient a row"},
                        "app": {"type": "string", "pattern": _ID, "description": "the app that may use it"},
                        "kind": {"type": "string", "enum": ["phone", "email", "user_id"],
                                 "description": "what the rows hold; else read from the header row"},
                        "ttl_hours": {"type": "integer", "minimum": 1, "maximum": MAX_TTL_HOURS,
                                      "default": DEFAULT_TTL_HOURS},
                    },
                }
            }
        },
    }
}


class RowErrorOut(BaseModel):
    row: int
    column: str
    value: str
    reason: str


class UploadOut(BaseModel):
    """An uploaded list: counts of its rows and recipients, and when it expires."""

    id: str
    app: str
    kind: str
    filename: str
    format: str
    encoding: str
    created_by: str
    created_at: str
    expires_at: str
    rows: int
    valid: int
    invalid: int
    duplicates: int
    known_people: int
    raw_addresses: int
    recipients: int
    errors_kept: int


class UploadCreated(UploadOut):
    errors: list[RowErrorOut]
    """The first row errors (SWITCHBOARD_UPLOAD_ERRORS_SHOWN); all of them at `errors_url`."""
    errors_url: str


def uploads_router(deps: ApiDeps, uploads: UploadSettings) -> APIRouter:
    router = APIRouter(
        prefix="/v1/uploads",
        tags=["uploads"],
        responses={
            401: {"model": Problem, "description": "Missing or invalid credentials"},
            403: {"model": Problem, "description": "Lacks uploads:manage on the list's app"},
        },
    )
    Manager = Annotated[Principal, Depends(deps.access.requires(PERMISSION))]
    UploadId = Annotated[str, Path(pattern=_ID)]
    store = uploads.store

    @router.post(
        "", status_code=status.HTTP_201_CREATED, response_model=UploadCreated, openapi_extra=_MULTIPART,
        summary="Upload a CSV or XLSX of phone numbers, emails or user ids as an audience",
        responses={413: {"model": Problem, "description": "Over SWITCHBOARD_UPLOAD_MAX_BYTES"},
                   422: {"model": Problem, "description": "A field is wrong, or the file cannot be read"}},
    )
    async def add_upload(request: Request, principal: Manager) -> dict[str, Any]:
        # Read after authentication: nobody without the permission gets a file spooled to disk.
        async with request.form(max_files=1, max_fields=8) as form:
            upload = await import_upload(deps, uploads, request, principal, form)
        shown = await store.errors(upload.upload_id, 0, uploads.errors_shown) if uploads.errors_shown else []
        return upload.as_dict() | {
            "errors": [vars(e) for e in shown], "errors_url": f"/v1/uploads/{upload.upload_id}/errors",
        }

    @router.get("", response_model=list[UploadOut], summary="The live uploaded lists the caller manages")
    async def list_uploads(
        principal: Manager, app: Annotated[str | None, Query(pattern=_ID)] = None
    ) -> list[dict[str, Any]]:
        if app is not None:
            deps.access.authorize(principal, PERMISSION, app)
            return [u.as_dict() for u in await store.live([app])]
        return [u.as_dict() for u in await managed_uploads(store, principal)]

    @router.get(
        "/{upload_id}", response_model=UploadOut, summary="One uploaded list: its counts and expiry",
        responses={404: {"model": Problem, "description": "Expired, removed or never uploaded"}},
    )
    async def show_upload(principal: Manager, upload_id: UploadId) -> dict[str, Any]:
        return (await found_upload(deps.access, store, principal, upload_id)).as_dict()

    @router.get(
        "/{upload_id}/errors", response_model=list[RowErrorOut], summary="An uploaded list's row errors",
        responses={404: {"model": Problem, "description": "Expired, removed or never uploaded"}},
    )
    async def upload_errors(
        principal: Manager,
        upload_id: UploadId,
        offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    ) -> list[dict[str, Any]]:
        await found_upload(deps.access, store, principal, upload_id)
        return [vars(e) for e in await store.errors(upload_id, offset, limit)]

    @router.delete(
        "/{upload_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Remove an uploaded list now",
        responses={404: {"model": Problem, "description": "Expired, removed or never uploaded"}},
    )
    async def remove_upload(request: Request, principal: Manager, upload_id: UploadId) -> None:
        await remove_upload_audited(deps, store, request, principal, upload_id)

    return router


async def import_upload(deps: ApiDeps, uploads: UploadSettings, request: Request, principal: Principal,
                        form: FormData) -> Upload:
    """Import the form's file as a list for its app (checked, audited); the console's form calls it too.
    Refusals name the field (422) or the permission (403)."""
    app, kind, ttl_hours = _fields(form.get("app"), form.get("kind"), form.get("ttl_hours"))
    deps.access.authorize(principal, PERMISSION, app)
    file = form.get("file")
    if not isinstance(file, UploadFile):
        raise invalid(("body", "file"), "a file is required (multipart field `file`)")
    return await stored_upload(deps, uploads, request, principal, app, kind, ttl_hours, file)


async def stored_upload(
    deps: ApiDeps, uploads: UploadSettings, request: Request, principal: Principal, app: str,
    kind: UploadKind | None, ttl_hours: int, file: UploadFile,
) -> Upload:
    """Store `file` as a list of `app` (the caller holds uploads:manage on it), audited as `upload.add`;
    422 naming `file` when it cannot be read. What the API's upload and the console's upload forms do."""
    deps.access.authorize(principal, PERMISSION, app)
    path = await asyncio.to_thread(_saved, file.file)
    try:
        upload = await import_file(
            uploads.store, path, app=app, kind=kind, ttl_hours=ttl_hours, filename=file.filename or "",
            created_by=principal.name, max_errors_kept=uploads.errors_kept,
        )
    except UploadRefused as exc:
        raise invalid(("body", "file"), str(exc), "unreadable_file") from None
    finally:
        await asyncio.to_thread(path.unlink, missing_ok=True)
    await deps.publisher.publish_audit(audit_record(
        request, principal, "upload.add", target_kind="upload", target=upload.upload_id, app=app,
        after=upload.as_dict(),
    ))
    return upload


async def managed_uploads(store: UploadStore, principal: Principal) -> list[Upload]:
    """The live lists of every app the principal holds uploads:manage on."""
    allowed = principal.apps_for(PERMISSION)
    return await store.live(await store.apps() if ALL_APPS in allowed else sorted(allowed))


async def remove_upload_audited(deps: ApiDeps, store: UploadStore, request: Request, principal: Principal,
                                upload_id: str) -> Upload:
    upload = await found_upload(deps.access, store, principal, upload_id)
    await store.remove(upload_id, principal.name)
    await deps.publisher.publish_audit(audit_record(
        request, principal, "upload.remove", target_kind="upload", target=upload_id, app=upload.app,
        before=upload.as_dict(),
    ))
    return upload


async def found_upload(access: Access, store: UploadStore, principal: Principal, upload_id: str) -> Upload:
    """The live upload, after checking the caller manages its app (a removed one is still checked)."""
    upload = await store.get(upload_id)
    if upload is not None:
        access.authorize(principal, PERMISSION, upload.app)
    if upload is None or upload.removed_at:
        raise HTTPException(status.HTTP_404_NOT_FOUND, _gone(upload_id, upload))
    return upload


def _gone(upload_id: str, upload: Upload | None) -> str:
    if upload is not None and upload.removed_at:
        return f"upload {upload_id} was removed by {upload.removed_by or '?'}"
    return f"upload {upload_id} expired or unknown"


def _fields(app: object, kind: object, ttl: object) -> tuple[str, UploadKind | None, int]:
    """The form's fields checked, each error naming its field."""
    if not isinstance(app, str) or not _NAME.match(app):
        raise invalid(("body", "app"), "the app's name is required (letters, digits and _ . : -)")
    try:
        parsed_kind = parse_kind(kind if isinstance(kind, str) else None)
    except UploadRefused as exc:
        raise invalid(("body", "kind"), str(exc).removeprefix("kind: ")) from None
    ttl_hours = DEFAULT_TTL_HOURS
    if ttl not in (None, ""):
        text = ttl if isinstance(ttl, str) else ""
        if not text.isdigit() or not 1 <= int(text) <= MAX_TTL_HOURS:
            problem = f"a whole number of hours from 1 to {MAX_TTL_HOURS} (30 days)"
            raise invalid(("body", "ttl_hours"), problem)
        ttl_hours = int(text)
    return app, parsed_kind, ttl_hours


def _saved(source: IO[bytes]) -> FilePath:
    """The spooled upload copied to a named temporary file, a megabyte at a time."""
    with tempfile.NamedTemporaryFile(prefix="switchboard-upload-", delete=False) as target:
        shutil.copyfileobj(source, target, 1 << 20)
        return FilePath(target.name)

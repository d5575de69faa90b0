"""A refused form, as the API refused it: the message it gives and the field it names, shown next to
that field when the page renders the form again."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import HTTPException, status
from fastapi.exceptions import RequestValidationError


@dataclass(frozen=True)
class FormError:
    """`field` is the last part of the API's `loc` (`password`, `role`...), '' for the whole form."""

    message: str
    field: str = ""
    status_code: int = status.HTTP_422_UNPROCESSABLE_CONTENT


def refusal(exc: HTTPException | RequestValidationError) -> FormError:
    """The API's answer to the same action, for the form: its message, its field, its status."""
    if isinstance(exc, RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid"}
        loc = [part for part in first.get("loc", ())
               if isinstance(part, str) and part not in ("body", "path", "query")]
        return FormError(str(first.get("msg", "invalid")), loc[-1] if loc else "")
    return FormError(str(exc.detail), "", exc.status_code)

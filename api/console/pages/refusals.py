"""The API's refusals as a form shows them: one message per field, the same words the API answers.

A service function refuses with an HTTPException (403, 404, 409) or a RequestValidationError (422,
`loc` naming the field); a form model refuses with a pydantic ValidationError. Each becomes
`{field: message}` (`""` for the form as a whole), never a traceback. Values are never quoted back:
a secret typed in the wrong field is not echoed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

FormErrors = dict[str, str]
_SKIPPED = frozenset({"body", "path", "query"})


def field_errors(errors: Iterable[Mapping[str, Any]]) -> FormErrors:
    """Pydantic-style errors (`loc`, `msg`) by field: the first part of `loc` after body/path/query,
    the rest of it (an index, a nested key) kept in the message."""
    found: FormErrors = {}
    for error in errors:
        loc: Sequence[Any] = [part for part in error.get("loc", ()) if part not in _SKIPPED]
        field = str(loc[0]) if loc else ""
        rest = ".".join(str(part) for part in loc[1:])
        message = str(error.get("msg", "")).removeprefix("Value error, ")
        text = f"{rest}: {message}" if rest else message
        found[field] = f"{found[field]}\n{text}" if field in found else text
    return found


def refusal(exc: Exception) -> FormErrors:
    """What the API would answer for `exc`, by field."""
    if isinstance(exc, ValidationError):
        return field_errors(exc.errors(include_input=False))
    if isinstance(exc, RequestValidationError):
        return field_errors(exc.errors())
    if isinstance(exc, HTTPException):
        return {"": str(exc.detail)}
    raise exc


def status_of(exc: Exception) -> int:
    """The status the API answers `exc` with (422 for a refused field)."""
    return exc.status_code if isinstance(exc, HTTPException) else 422

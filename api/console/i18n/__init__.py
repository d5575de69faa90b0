"""The console's words in Chinese and English: one table per page module (`api/console/i18n/<page>.py`,
a `WORDS = {"key": {"zh": ..., "en": ...}}`), plus `common` for the frame (header, navigation, login).

Templates look words up with `t("key")`; a page's own table is found by the folder of its template
(`overview/page.html` reads `i18n/overview.py`), over the common one.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from functools import cache
from typing import Literal, get_args

Locale = Literal["zh", "en"]
LOCALES: tuple[str, ...] = get_args(Locale)
DEFAULT_LOCALE: Locale = "zh"
Words = Mapping[str, Mapping[str, str]]

log = logging.getLogger(__name__)


@cache
def table(page: str) -> Words:
    """The words of one page module (`common` for the frame): `{}` for a page without its own."""
    try:
        module = importlib.import_module(f"{__name__}.{page}")
    except ModuleNotFoundError:
        return {}
    words: Words = module.WORDS
    return words


def translator(page: str, locale: str) -> Callable[..., str]:
    """`t("key", **values)`: the page's word for `key` in `locale` (else the common one), with
    `{name}` placeholders filled from `values`. A missing key shows itself, bracketed, and is logged:
    a test over every template (tests/unit/test_console_i18n.py) keeps that from shipping."""
    own, common = table(page), table("common")

    def t(key: str, **values: object) -> str:
        entry = own.get(key) or common.get(key)
        if entry is None:
            log.warning("console: no words for %r (page %s)", key, page)
            return f"[{key}]"
        text = entry.get(locale) or entry[DEFAULT_LOCALE]
        return text.format(**values) if values else text

    return t

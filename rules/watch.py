"""Reload rules while running: notice changed rule files, validate them, hand over a new ruleset.

Cheap enough to poll every second: it looks at file names, sizes and mtimes first and reads the
files only when those changed, then compares their hash with the running version. A broken file is
logged once with every `file:line:col` error, and the running rules stay.
"""

from __future__ import annotations

import logging
from pathlib import Path

from rules.errors import RuleFileError
from rules.loader import load_ruleset, rule_files, ruleset_version, template_names
from rules.schema import Ruleset

log = logging.getLogger(__name__)

Signature = tuple[tuple[str, int, int], ...]


class RulesWatcher:
    """Polls a rule file or folder; `poll()` returns a new valid ruleset once per change, else None."""

    def __init__(
        self, path: str | Path, templates_folder: str | Path | None = None, current: Ruleset | None = None
    ) -> None:
        self._path = Path(path)
        self._templates = Path(templates_folder) if templates_folder is not None else None
        self._current = current
        self._signature: Signature | None = None
        self._seen_version = current.version if current is not None else None
        """The version last loaded or refused: the same bytes are not loaded (or logged) twice."""

    @property
    def ruleset(self) -> Ruleset | None:
        """The last valid ruleset: the one given, or the last `poll()` returned."""
        return self._current

    def poll(self) -> Ruleset | None:
        """A newly valid ruleset if the files changed since the last poll; None otherwise."""
        files = rule_files(self._path)
        signature = self._stat(files)
        if signature is not None and signature == self._signature:
            return None
        self._signature = signature
        try:
            version = ruleset_version([(f.name, f.read_bytes()) for f in files])
        except OSError as exc:
            log.warning("rules %s: cannot read (%s); keeping version %s", self._path, exc, self._running())
            return None
        if version == self._seen_version:
            return None
        self._seen_version = version
        try:
            names = template_names(self._templates) if self._templates is not None else None
            ruleset = load_ruleset(self._path, names)
        except RuleFileError as exc:
            errors = "\n".join(map(str, exc.errors))
            log.error("rules %s refused, keeping version %s:\n%s", self._path, self._running(), errors)
            return None
        except Exception as exc:  # a bad templates folder must not stop the worker either
            log.error("rules %s refused, keeping version %s: %s", self._path, self._running(), exc)
            return None
        if self._current is not None and ruleset.version == self._current.version:
            return None
        log.info("rules %s: version %s loaded (was %s)", self._path, ruleset.version, self._running())
        self._current = ruleset
        return ruleset

    def _running(self) -> str:
        return self._current.version if self._current is not None else "(none)"

    @staticmethod
    def _stat(files: list[Path]) -> Signature | None:
        try:
            return tuple((f.name, (s := f.stat()).st_size, s.st_mtime_ns) for f in files)
        except OSError:
            return None

"""Reload rules and templates while running: notice changed files, check them together, take both.

A rule naming a template the worker cannot render (absent, or without a part for a channel the rule
may send on) must never go live, so rule files and template files are watched as one: a change to
either loads both, checks the rules against the new templates, and only then takes both. The
templates go first, in one assignment into the catalog every stage holds; then `poll()` returns the
ruleset for the engine to swap between two batches, so no decision of the new rules meets the old
templates. A refused change is logged once with every `file:line:col` error (or the template file
and its problem), and the running rules and templates stay as they were.

Cheap enough to poll every second: it looks at file names, sizes and mtimes first and reads the
files only when those changed, then compares their hashes with the running versions.
"""

from __future__ import annotations

import logging
from pathlib import Path

from channels.templates import TemplateCatalog, TemplateError
from rules.errors import RuleFileError
from rules.loader import load_ruleset, rule_files, ruleset_version
from rules.schema import Ruleset

log = logging.getLogger(__name__)

Signature = tuple[tuple[str, int, int], ...]


class RulesWatcher:
    """Polls the rule files and the templates folder; `poll()` returns a new valid ruleset once per
    change of the rules, else None. Given the worker's `catalog`, changed templates are taken into it."""

    def __init__(
        self,
        path: str | Path,
        templates_folder: str | Path | None = None,
        current: Ruleset | None = None,
        catalog: TemplateCatalog | None = None,
    ) -> None:
        self._path = Path(path)
        self._templates = Path(templates_folder) if templates_folder is not None else None
        self._catalog = catalog
        self._current = current
        self._signature: Signature | None = None
        self._seen: tuple[str, str] | None = None
        """Rules and templates versions last loaded or refused: the same bytes are not loaded (or
        logged) twice."""
        if current is not None:
            try:
                self._seen = (current.version, ruleset_version(_contents(self._template_files())))
            except OSError:
                self._seen = None

    @property
    def path(self) -> Path:
        """The rule file or folder watched (SWITCHBOARD_RULES)."""
        return self._path

    @property
    def templates_folder(self) -> Path | None:
        """The template files' folder the rules are checked against, if any."""
        return self._templates

    @property
    def ruleset(self) -> Ruleset | None:
        """The last valid ruleset: the one given, or the last `poll()` returned."""
        return self._current

    def poll(self) -> Ruleset | None:
        """A newly valid ruleset if the rule files changed since the last poll; None otherwise.

        Changed templates that the rules accept are taken into the catalog even when the rules did
        not change."""
        rules, templates = rule_files(self._path), self._template_files()
        signature = self.signature([*rules, *templates])
        if signature is not None and signature == self._signature:
            return None
        self._signature = signature
        try:
            versions = (ruleset_version(_contents(rules)), ruleset_version(_contents(templates)))
        except OSError as exc:
            log.warning("rules %s: cannot read (%s); keeping version %s", self._path, exc, self._running())
            return None
        if versions == self._seen:
            return None
        self._seen = versions
        try:
            catalog = TemplateCatalog(self._templates) if self._templates is not None else None
            ruleset = load_ruleset(self._path, catalog.parts() if catalog is not None else None)
        except RuleFileError as exc:
            errors = "\n".join(map(str, exc.errors))
            log.error("rules %s refused, keeping version %s:\n%s", self._path, self._running(), errors)
            return None
        except TemplateError as exc:
            log.error(
                "templates %s refused, keeping them and rules version %s as they run: %s",
                self._templates, self._running(), exc,
            )
            return None
        except Exception as exc:  # a bad file of any kind must not stop the worker
            log.error("rules %s refused, keeping version %s: %s", self._path, self._running(), exc)
            return None
        if catalog is not None and self._catalog is not None:
            self._catalog.adopt(catalog)  # before the rules: no new rule may name a template not yet here
            log.info("templates %s: %d loaded with rules version %s", self._templates,
                     len(catalog.names), ruleset.version)
        if self._current is not None and ruleset.version == self._current.version:
            return None
        log.info("rules %s: version %s loaded (was %s)", self._path, ruleset.version, self._running())
        self._current = ruleset
        return ruleset

    def _template_files(self) -> list[Path]:
        if self._templates is None or not self._templates.is_dir():
            return []
        return sorted(p for p in self._templates.glob("*.yaml") if p.is_file())

    def _running(self) -> str:
        return self._current.version if self._current is not None else "(none)"

    @staticmethod
    def signature(files: list[Path]) -> Signature | None:
        """Each file's name, size and modification time; None when one cannot be read."""
        try:
            return tuple((str(f), (s := f.stat()).st_size, s.st_mtime_ns) for f in files)
        except OSError:
            return None


def _contents(files: list[Path]) -> list[tuple[str, bytes]]:
    return [(f.name, f.read_bytes()) for f in files]

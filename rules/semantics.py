"""Checks across rules and files that a schema cannot make: every one points at the place it is about.

Duplicate ids and strategy names, rules that can never win or never match, two files of the same
`order` whose rules compete for the same delivery, names of templates, quiet hours windows and
strategies that do not exist.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta

from rules.errors import ParsedFile, RuleError, suggest
from rules.schema import QUIET_OFF, Rule, Strategy, Then, When, duration_text

_ANY_OF = ("category", "priority", "type", "app", "template", "campaign", "channel_pref", "tags_any")


@dataclass(frozen=True)
class PlacedRule:
    """A rule with the file it came from and its index there."""

    rule: Rule
    file: ParsedFile
    index: int

    def error(self, message: str, *loc: str | int) -> RuleError:
        return self.file.error(("rules", self.index, *(loc or ("id",))), message)

    @property
    def origin(self) -> str:
        return self.file.line_of(("rules", self.index, "id"))


def in_order(files: Sequence[ParsedFile]) -> list[ParsedFile]:
    """Files as their rules are tried: by `order:` (absent counts as 0), then by file name."""
    return sorted(files, key=lambda f: (f.content.order or 0, f.path))


def placed_rules(files: Sequence[ParsedFile]) -> list[PlacedRule]:
    return [PlacedRule(rule, f, i) for f in in_order(files) for i, rule in enumerate(f.content.rules)]


def semantic_errors(files: Sequence[ParsedFile], templates: Collection[str] | None) -> list[RuleError]:
    """Every cross-rule and cross-file problem; `templates` None skips the template names check."""
    placed = placed_rules(files)
    errors = _file_errors(files)
    errors.extend(_duplicate_ids(placed, files))
    errors.extend(_unreachable(placed))
    errors.extend(_same_order_conflicts(files))
    strategies = defined_strategies(files)
    errors.extend(_strategy_errors(placed, files, strategies))
    errors.extend(_references(placed, files, templates, strategies))
    if files and not placed:
        errors.append(files[0].error(("ruleset",), "no rules: a ruleset needs at least one rule", key=True))
    return errors


def _file_errors(files: Sequence[ParsedFile]) -> list[RuleError]:
    errors: list[RuleError] = []
    if len(files) > 1:
        for f in files:
            if f.content.order is None:
                message = "rule files in a folder need 'order: N' (files with lower numbers are tried first)"
                errors.append(f.error(("ruleset",), message, key=True))
    setters = [f for f in files if f.content.urgent_bypass is not None]
    for later in setters[1:]:
        message = f"urgent_bypass is already set in {setters[0].line_of(('urgent_bypass',))}: set it once"
        errors.append(later.error(("urgent_bypass",), message, key=True))
    return errors


def _duplicate_ids(placed: Sequence[PlacedRule], files: Sequence[ParsedFile]) -> Iterator[RuleError]:
    first: dict[str, PlacedRule] = {}
    for later in placed:
        earlier = first.setdefault(later.rule.id, later)
        if earlier is not later:
            yield later.error(f"duplicate rule id {later.rule.id!r} (first defined at {earlier.origin})")
    for section, noun in (("quiet_hours", "quiet hours window"), ("caps", "cap")):
        seen: dict[str, str] = {}
        for f in in_order(files):
            for index, item in enumerate(getattr(f.content, section)):
                loc = (section, index, "id")
                if item.id in seen:
                    yield f.error(loc, f"duplicate {noun} id {item.id!r} (first defined at {seen[item.id]})")
                seen.setdefault(item.id, f.line_of(loc))


def defined_strategies(files: Sequence[ParsedFile]) -> dict[str, Strategy]:
    """Every named strategy by name, the first definition of a name winning (a second is an error)."""
    found: dict[str, Strategy] = {}
    for f in in_order(files):
        for name, spec in f.content.strategies.items():
            found.setdefault(name, spec)
    return found


def _strategy_errors(
    placed: Sequence[PlacedRule], files: Sequence[ParsedFile], strategies: Mapping[str, Strategy]
) -> Iterator[RuleError]:
    """A strategy name defined twice (across files: YAML's duplicate key catches it within one), and a
    rule naming a strategy no file defines."""
    seen: dict[str, str] = {}
    for f in in_order(files):
        for name in f.content.strategies:
            loc = ("strategies", name)
            if name in seen:
                message = f"duplicate strategy {name!r} (first defined at {seen[name]}): keep one"
                yield f.error(loc, message, key=True)
            seen.setdefault(name, f.key_line(loc))
    for p in placed:
        used = p.rule.then.strategy
        if used is not None and used not in strategies:
            yield p.error(unknown_strategy(used, sorted(strategies)), "then", "strategy")


def unknown_strategy(name: str, known: Sequence[str]) -> str:
    """The message for a strategy name nobody defined, with the closest defined name."""
    if not known:
        return f"unknown strategy {name!r}: no rule file defines any (add it under 'strategies:')"
    return f"unknown strategy {name!r}" + suggest(name, known)


def _unreachable(placed: Sequence[PlacedRule]) -> Iterator[RuleError]:
    earlier = _ShadowIndex()
    for index, later in enumerate(placed):
        when = later.rule.when
        if never_matches(when):
            yield later.error(
                f"rule {later.rule.id!r} can never match: nobody is both active within "
                f"{_text(when.active_within)} and inactive for {_text(when.inactive_for)}"
            )
        else:
            shadow = earlier.first_covering(when)
            if shadow is not None and placed[shadow].rule.id != later.rule.id:
                first = placed[shadow]
                yield later.error(
                    f"rule {later.rule.id!r} is unreachable: rule {first.rule.id!r} ({first.origin}) "
                    "comes first and matches everything it matches"
                )
        earlier.add(index, when)


class _ShadowIndex:
    """Earlier rules indexed so a later rule is compared only with those that could cover it.

    Comparing every pair is quadratic (12.8 s for 3,000 rules). A rule can only be covered by one that
    sets a subset of its keys and, on each list key, lists each of its values: rules are grouped by the
    keys they set and, within a group, by value for each list key; a lookup reads the shortest list.
    """

    def __init__(self) -> None:
        # keys set -> list key -> value -> positions, ascending ("" -> every position, for no list key)
        self._groups: dict[frozenset[str], dict[str, dict[str, list[int]]]] = {}
        self._whens: list[When] = []

    def add(self, position: int, when: When) -> None:
        self._whens.append(when)
        keys = frozenset(when.conditions())
        group = self._groups.setdefault(keys, {})
        group.setdefault("", {}).setdefault("", []).append(position)
        for key in _ANY_OF:
            for value in dict.fromkeys(getattr(when, key) or ()):
                group.setdefault(key, {}).setdefault(value, []).append(position)

    def first_covering(self, when: When) -> int | None:
        """The position of the first earlier rule that matches everything `when` matches."""
        keys = frozenset(when.conditions())
        best: int | None = None
        for group_keys, group in self._groups.items():
            if not group_keys <= keys:
                continue
            candidates = min(
                (group[key].get(getattr(when, key)[0], []) for key in group if key),
                key=len,
                default=group[""][""],
            )
            for position in candidates:
                if best is not None and position >= best:
                    break
                if covers(self._whens[position], when):
                    best = position
                    break
        return best


def _same_order_conflicts(files: Sequence[ParsedFile]) -> Iterator[RuleError]:
    """Two files of one order leave their relative priority to file names: refuse it if it matters."""
    ordered = in_order(files)
    for i, first in enumerate(ordered):
        for second in ordered[i + 1 :]:
            if first.content.order is None or first.content.order != second.content.order:
                continue
            pair = next(
                (
                    (a, b)
                    for a in placed_rules([first])
                    for b in placed_rules([second])
                    if can_both_match(a.rule.when, b.rule.when)
                ),
                None,
            )
            if pair is not None:
                a, b = pair
                yield b.error(
                    f"rule {b.rule.id!r} and rule {a.rule.id!r} ({a.origin}) can match the same delivery, "
                    f"and both files have order {first.content.order}: give the files different 'order:' "
                    "so it is clear which wins"
                )


def _references(
    placed: Sequence[PlacedRule],
    files: Sequence[ParsedFile],
    templates: Collection[str] | None,
    strategies: Mapping[str, Strategy],
) -> Iterator[RuleError]:
    windows = [w.id for f in files for w in f.content.quiet_hours]
    known_templates = sorted(templates) if templates is not None else None
    for p in placed:
        then = p.rule.then
        strategy = strategies.get(then.strategy) if then.strategy is not None else None
        named = _named_channels(then, strategy)
        if then.budget is not None and then.budget.picks_cheaper and len(named) < 2:
            which = "near" if then.budget.near == "cheaper" else "over"
            yield p.error(
                f"'{which}: cheaper' picks the cheapest of the rule's channels, but it names only "
                f"{', '.join(named) or 'none'}: name others, or use send, drop or hold",
                "then", "budget", which,
            )
        if then.quiet_hours not in (None, QUIET_OFF) and then.quiet_hours not in windows:
            yield p.error(
                f"unknown quiet hours window {then.quiet_hours!r}" + suggest(str(then.quiet_hours), windows),
                "then", "quiet_hours",
            )
        if known_templates is None:
            continue
        for loc, name, channels in _template_uses(p.rule, strategy):
            if name not in known_templates:
                yield p.error(f"unknown template {name!r}" + suggest(name, known_templates), *loc)
            elif isinstance(templates, Mapping) and channels:
                parts = templates[name]
                missing = [c for c in channels if c != "preferred" and c not in parts]
                if missing:
                    has = ", ".join(sorted(parts)) or "none"
                    them = "them" if len(missing) > 1 else "it"
                    lacking = ", ".join(missing)
                    message = f"template {name!r} has no {lacking} part, but this may send on {them}"
                    yield p.error(f"{message} (it has: {has})", *loc)
    for f in files:
        if known_templates is None:
            break
        yield from _strategy_templates(f, known_templates, templates or ())
        for section in ("quiet_hours", "caps"):
            for index, item in enumerate(getattr(f.content, section)):
                for position, name in enumerate(item.match.template or () if item.match else ()):
                    if name not in known_templates:
                        loc = (section, index, "match", "template", position)
                        yield f.error(loc, f"unknown template {name!r}" + suggest(name, known_templates))


def _strategy_templates(
    f: ParsedFile, known: Sequence[str], templates: Collection[str]
) -> Iterator[RuleError]:
    """Each strategy step's own template exists and has a part for every channel the step may use."""
    for strategy_name, spec in f.content.strategies.items():
        for index, step in enumerate(spec.fallback):
            name = step.template
            if name is None:
                continue
            loc = ("strategies", strategy_name, "fallback", index, "template")
            if name not in known:
                yield f.error(loc, f"unknown template {name!r}" + suggest(name, known))
            elif isinstance(templates, Mapping):
                missing = [c for c in step.first_of if c != "preferred" and c not in templates[name]]
                if missing:
                    has = ", ".join(sorted(templates[name])) or "none"
                    them = "them" if len(missing) > 1 else "it"
                    lacking = ", ".join(missing)
                    message = f"template {name!r} has no {lacking} part, but this step may send on {them}"
                    yield f.error(loc, f"{message} (it has: {has})")


def _named_channels(then: Then, strategy: Strategy | None = None) -> list[str]:
    """Every channel the rule (or its strategy) or its sending variants name (`preferred` counts as one)."""
    named = [*(then.channels or ()), *(then.first_of or ()), *(strategy.first if strategy else ())]
    for variant in then.variants or ():
        named += [*(variant.channels or ()), *(variant.first_of or ())]
    return list(dict.fromkeys(named))


def _template_uses(
    rule: Rule, strategy: Strategy | None = None
) -> Iterator[tuple[tuple[str | int, ...], str, list[str]]]:
    """Each template a rule names, where, and every channel it may be rendered for by any path.

    A recipient falls into one arm (a sending variant, or the rule itself without variants); the arm
    renders its variant's template, else the rule's, else the event's (one of `when: template`), on
    its own channels (or its strategy's) and on every fallback step that has no template of its own.
    A strategy's own step templates are checked where the strategy is defined.
    """
    then = rule.then
    own: list[str] = list(then.channels or then.first_of or (strategy.first if strategy else ()))
    steps = strategy.fallback if strategy is not None else then.fallback or ()
    inherited = [str(c) for step in steps if step.template is None for c in step.first_of]
    arms: list[tuple[tuple[str | int, ...] | None, str | None, list[str]]] = []
    for index, variant in enumerate(then.variants or ()):
        if not variant.control:
            where: tuple[str | int, ...] | None = None
            if variant.template is not None:
                where = ("then", "variants", index, "template")
            channels = [str(c) for c in variant.channels or variant.first_of or own]
            arms.append((where, variant.template, channels))
    if not then.variants:
        arms.append((None, None, own))
    uses: dict[tuple[tuple[str | int, ...], str], list[str]] = {}
    for position, name in enumerate(rule.when.template or ()):
        uses[("when", "template", position), name] = []
    for where, template, channels in arms:
        reach = [*channels, *inherited]
        if template is not None and where is not None:
            uses.setdefault((where, template), []).extend(reach)
        elif then.template is not None:
            uses.setdefault((("then", "template"), then.template), []).extend(reach)
        else:  # the event's own template, which `when: template` says is one of these
            for position, name in enumerate(rule.when.template or ()):
                uses[("when", "template", position), name].extend(reach)
    if then.template is not None:
        uses.setdefault((("then", "template"), then.template), [])
    for index, step in enumerate(then.fallback or ()):
        if step.template is not None:
            uses[("then", "fallback", index, "template"), step.template] = [str(c) for c in step.first_of]
    for (loc, name), channels in uses.items():
        yield loc, name, list(dict.fromkeys(channels))


def never_matches(when: When) -> bool:
    """`active_within: 7d` with `inactive_for: 7d` (or longer) holds for nobody."""
    return (
        when.active_within is not None
        and when.inactive_for is not None
        and when.inactive_for >= when.active_within
    )


def covers(earlier: When, later: When) -> bool:
    """True if every delivery `later` matches is matched by `earlier` (so `later` never wins)."""
    for key, values in earlier.conditions().items():
        other = getattr(later, key)
        if other is None:
            return False
        if key == "bound":  # all-of: needing more channels is the narrower condition
            if not set(values) <= set(other):
                return False
        elif key == "active_within":
            if other > values:
                return False
        elif key == "inactive_for":
            if other < values:
                return False
        elif not set(other) <= set(values):
            return False
    return True


def can_both_match(a: When, b: When) -> bool:
    """False only when no delivery can satisfy both (disjoint values, or contradictory activity)."""
    for key in _ANY_OF:
        mine, theirs = getattr(a, key), getattr(b, key)
        if key != "tags_any" and mine is not None and theirs is not None and not set(mine) & set(theirs):
            return False
    actives = [w for w in (a.active_within, b.active_within) if w is not None]
    inactives = [w for w in (a.inactive_for, b.inactive_for) if w is not None]
    return not (actives and inactives and max(inactives) >= min(actives))


def _text(duration: timedelta | None) -> str:
    return duration_text(duration) if duration is not None else ""

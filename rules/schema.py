"""The rule-file language: pydantic models that reject anything they do not know.

A rule file holds a ruleset name and an ordered list of rules; the first rule whose `when` matches a
delivery decides it. New condition or action keys go into `When` / `Then` as optional fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from processors.records import Category, ChannelName, Name, Priority

RuleId = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*$")]
ChannelChoice = Literal[ChannelName, "preferred"]
"""A `first_of` entry: a channel, or `preferred` for the user's own channel preference."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class When(_Strict):
    """Conditions of a rule, AND-ed; each list means 'any of these values'. Empty `when` matches all."""

    category: Annotated[list[Category] | None, Field(min_length=1)] = None
    priority: Annotated[list[Priority] | None, Field(min_length=1)] = None
    type: Annotated[list[Name] | None, Field(min_length=1)] = None
    app: Annotated[list[Name] | None, Field(min_length=1)] = None
    template: Annotated[list[Name] | None, Field(min_length=1)] = None
    channel_pref: Annotated[list[ChannelName] | None, Field(min_length=1)] = None
    bound: Annotated[list[ChannelName] | None, Field(min_length=1)] = None
    """The user has an address on ALL of these channels."""
    tags_any: Annotated[list[Name] | None, Field(min_length=1)] = None

    def conditions(self) -> dict[str, list[str]]:
        """The conditions that are set, by key, in declaration order."""
        return {key: list(value) for key, value in self if value is not None}


class Then(_Strict):
    """What a matching rule does: exactly one of `channels`, `first_of`, `suppress`."""

    channels: Annotated[list[ChannelName] | None, Field(min_length=1)] = None
    """Send on each of these channels the user has an address on."""
    first_of: Annotated[list[ChannelChoice] | None, Field(min_length=1)] = None
    """Send on the first of these the user can be reached on."""
    suppress: Annotated[str, StringConstraints(min_length=1, max_length=200)] | None = None
    """Send nothing; the text is the reason recorded."""

    @model_validator(mode="after")
    def _exactly_one(self) -> Then:
        chosen = [key for key in ("channels", "first_of", "suppress") if getattr(self, key) is not None]
        if len(chosen) != 1:
            raise ValueError(
                f"'then' needs exactly one of channels, first_of, suppress; got {', '.join(chosen) or 'none'}"
            )
        return self


class Rule(_Strict):
    """One rule: when its conditions hold, its action decides the delivery."""

    id: RuleId
    description: str = ""
    when: When = Field(default_factory=When)
    then: Then


class RuleFile(_Strict):
    """The contents of one rule file."""

    ruleset: Name
    rules: Annotated[list[Rule], Field(min_length=1)]


@dataclass(frozen=True)
class Ruleset:
    """Validated rules from one or more files, in the order they are tried."""

    name: str
    version: str
    rules: tuple[Rule, ...]
    origins: dict[str, str] = field(default_factory=dict, compare=False)
    """Rule id -> `file:line` where it is defined, for explanations."""

    def tags(self) -> tuple[str, ...]:
        """Every tag named by any rule, in first-use order."""
        seen: dict[str, None] = {}
        for rule in self.rules:
            for tag in rule.when.tags_any or ():
                seen.setdefault(tag)
        return tuple(seen)

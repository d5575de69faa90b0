"""The segment definition language: what it accepts, how it names what is wrong, how it matches."""

from __future__ import annotations

from typing import Any

import pytest

from state.segment_definitions import (
    DefinitionError,
    Person,
    matches,
    needs_of,
    parse_definition,
    required_tag_sets,
)

DAY_MS = 86_400_000
NOW = 1_000 * DAY_MS
DORMANT_2020 = {
    "all": [
        {"tags": {"all": ["undergraduate", "class-2020"]}},
        {"not": {"engaged": {"status": "read", "within": "30 days"}}},
    ]
}


def person(
    tags: tuple[str, ...] = (), engaged: list[tuple[int, str]] | None = None, **profile: Any
) -> Person:
    return Person({"user_id": "u1", "tags": list(tags), **profile}, engaged or [])


def test_undergraduates_of_2020_who_have_not_read_in_30_days() -> None:
    root = parse_definition(DORMANT_2020).root
    alumni = ("undergraduate", "class-2020")
    assert matches(root, person(alumni), NOW)
    assert matches(root, person(alumni, [(NOW - 31 * DAY_MS, "read")]), NOW)
    assert not matches(root, person(alumni, [(NOW - DAY_MS, "read")]), NOW), "read yesterday"
    assert matches(root, person(alumni, [(NOW - DAY_MS, "clicked")]), NOW), "clicked is not read"
    assert not matches(root, person(("undergraduate", "class-2021")), NOW)


@pytest.mark.parametrize(
    ("definition", "problems"),
    [
        (
            {"all": [{"tags": {"all": ["a"]}}, {"not": {"engaged": {"status": "red", "within": "30 dys"}}}]},
            ["all[1].not.engaged.status", "all[1].not.engaged.within"],
        ),
        ({"any": [{"attribute": "locle", "equals": "en"}]}, ["any[0].attribute"]),
        ({"any": [{"bound": "emial"}]}, ["any[0].bound"]),
        ({"all": []}, ["all"]),
        ({"tags": {}}, ["tags"]),
        ({"engaged": {"within": "400 days"}}, ["engaged.within"]),
        ({"consent": {"category": "marketting"}}, ["consent.category"]),
        ({"tags": {"all": ["a"]}, "bound": "sms"}, [""]),
        ({"attribute": "locale", "equals": "en", "in": ["en"]}, ["attribute"]),
    ],
)
def test_a_bad_definition_names_the_path_of_each_bad_condition(
    definition: dict[str, Any], problems: list[str]
) -> None:
    with pytest.raises(DefinitionError) as caught:
        parse_definition(definition)
    assert [path for path, _ in caught.value.problems] == problems


def test_an_unknown_attribute_suggests_the_closest_field() -> None:
    with pytest.raises(DefinitionError, match="did you mean 'locale'"):
        parse_definition({"attribute": "locle", "equals": "en"})


@pytest.mark.parametrize(
    ("test", "profile", "expected"),
    [
        ({"equals": "en-GB"}, {"locale": "en-GB"}, True),
        ({"equals": "en-GB"}, {"locale": "zh-CN"}, False),
        ({"not_equals": "en-GB"}, {}, True),
        ({"in": ["zh-CN", "zh-TW"]}, {"locale": "zh-TW"}, True),
        ({"starts_with": "zh"}, {"locale": "zh-TW"}, True),
        ({"exists": True}, {"locale": ""}, False),
        ({"exists": False}, {}, True),
    ],
)
def test_attribute_tests_read_the_profile_as_stored(
    test: dict[str, Any], profile: dict[str, Any], expected: bool
) -> None:
    root = parse_definition({"attribute": "locale", **test}).root
    assert matches(root, person(**profile), NOW) is expected


def test_a_dotted_attribute_reaches_into_a_mapping_and_compares_numbers() -> None:
    root = parse_definition({"attribute": "bindings.email", "exists": True}).root
    assert matches(root, person(bindings={"email": "a@uni.example"}), NOW)
    assert not matches(root, person(bindings={"sms": "+8613800000000"}), NOW)
    # A comparison of a value of another type does not match rather than fail the page.
    older = parse_definition({"attribute": "name", "gt": 3}).root
    assert not matches(older, person(name="Li"), NOW)


def test_tags_bindings_and_combinators() -> None:
    root = parse_definition(
        {"any": [{"tags": {"any": ["chem", "bio"], "none": ["alumni"]}}, {"bound": "sms"}]}
    ).root
    assert matches(root, person(("bio",)), NOW)
    assert not matches(root, person(("bio", "alumni")), NOW)
    assert matches(root, person(("alumni",), bindings={"sms": "+8613800000000"}), NOW)
    assert not matches(root, person(("physics",), bindings={"sms": ""}), NOW)


def test_consent_excludes_the_unsubscribed_and_may_require_an_opt_in() -> None:
    marketing = parse_definition({"consent": {"category": "marketing", "channel": "email"}}).root
    assert matches(marketing, person(), NOW)
    unsubscribed = Person({"tags": []}, refused=frozenset({"marketing|*"}))
    assert not matches(marketing, unsubscribed, NOW)
    only_sms = Person({"tags": []}, refused=frozenset({"marketing|sms"}))
    assert matches(marketing, only_sms, NOW)
    opted = parse_definition({"consent": {"category": "marketing", "opted_in": True}}).root
    assert not matches(opted, person(), NOW)
    assert matches(opted, Person({"tags": []}, opted_in=frozenset({"marketing|*"})), NOW)


def test_what_a_definition_reads_and_the_indexes_it_may_walk() -> None:
    root = parse_definition(DORMANT_2020).root
    assert needs_of(root).engagement_seconds == 30 * 86_400
    assert not needs_of(root).consent
    assert required_tag_sets(root) == [("undergraduate",), ("class-2020",)]
    # Under `any` or `not`, no tag is required of every member: walk everyone.
    either = parse_definition({"any": [{"tags": {"all": ["a"]}}, {"bound": "sms"}]}).root
    assert required_tag_sets(either) == []
    assert required_tag_sets(parse_definition({"tags": {"any": ["b", "a"]}}).root) == [("a", "b")]

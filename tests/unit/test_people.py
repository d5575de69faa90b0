"""A person's addresses: which one each channel uses (latest, primary, all), profiles written before
addresses existed, and the API's changes to them (no services)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from api.people import PersonError, PersonIn, PersonPatch, audited_view, changed_person, new_person
from processors.send import send_key
from records.topics import Dispatch, EventCore
from state.users import User, address_ids

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)  # only compared with other literal times here
OLD, NEW = NOW - timedelta(days=3), NOW - timedelta(hours=1)


def devices(**choice: str) -> User:
    return User.model_validate(
        {
            "user_id": "u1",
            "addresses": {
                "push": [
                    {"address": "fcm:primary-token-0123456789", "primary": True, "last_active": OLD},
                    {"address": "fcm:newest-token-0123456789", "last_active": NEW},
                    {"address": "fcm:never-seen-0123456789"},
                ],
                "email": [{"address": "a@uni.example"}, {"address": "b@uni.example", "primary": True}],
            },
            "address_choice": choice,
        }
    )


def test_push_defaults_to_the_latest_device_and_email_to_the_primary() -> None:
    user = devices()
    assert user.bindings == {"push": "fcm:newest-token-0123456789", "email": "b@uni.example"}
    assert user.recipients("push") == ("fcm:newest-token-0123456789",)


def test_the_choice_is_per_channel() -> None:
    user = devices(push="primary", email="all")
    assert user.bindings["push"] == "fcm:primary-token-0123456789"
    assert user.recipients("email") == ("a@uni.example", "b@uni.example")
    # Under `all` the primary stands for the channel, where rules and consent look at one address.
    assert user.bindings["email"] == "b@uni.example"


def test_latest_with_no_activity_known_is_the_primary_then_the_first() -> None:
    user = User.model_validate(
        {
            "user_id": "u2",
            "addresses": {
                "push": [{"address": "fcm:one-0123456789abcdefgh"}, {"address": "fcm:two-0123456789abcdefgh"}]
            },
        }
    )
    assert user.bindings["push"] == "fcm:one-0123456789abcdefgh"


def test_a_profile_with_bindings_only_reads_as_one_primary_address_each() -> None:
    stored = '{"user_id": "u3", "bindings": {"email": "c@uni.example", "inbox": "u3"}}'
    user = User.model_validate_json(stored)
    assert user.addresses["email"][0].primary and user.bindings == {"email": "c@uni.example", "inbox": "u3"}
    # Written back and read again, it is the same person.
    assert User.model_validate_json(user.model_dump_json()) == user


def test_every_address_is_indexed_not_only_the_chosen_one() -> None:
    assert len(address_ids(devices())) == 5


@pytest.mark.parametrize(
    ("addresses", "says"),
    [
        ({"email": [{"address": "a@x.example"}, {"address": "a@x.example"}]}, "listed twice"),
        (
            {
                "email": [
                    {"address": "a@x.example", "primary": True},
                    {"address": "b@x.example", "primary": True},
                ]
            },
            "more than one address is primary",
        ),
        ({"push": [{"address": f"fcm:t{n:030d}"} for n in range(21)]}, "at most 20 addresses"),
    ],
)
def test_the_model_refuses_duplicates_two_primaries_and_too_many(
    addresses: dict[str, object], says: str
) -> None:
    with pytest.raises(ValidationError, match=says):
        User.model_validate({"user_id": "u4", "addresses": addresses})


def test_the_api_cleans_addresses_and_names_a_bad_one_by_channel_and_index() -> None:
    person = new_person(
        PersonIn.model_validate(
            {"user_id": "u5", "addresses": {"sms": ["+86 138-0013-8000"], "email": ["Z@UNI.EXAMPLE"]}}
        ),
        NOW,
    )
    assert person.bindings == {"sms": "+8613800138000", "email": "Z@uni.example"}
    assert person.addresses["sms"][0].last_active == NOW  # a new address is active as it is added
    with pytest.raises(PersonError) as refused:
        new_person(
            PersonIn.model_validate({"user_id": "u5", "addresses": {"push": ["fcm:" + "x" * 30, "x"]}}), NOW
        )
    assert refused.value.loc == ("addresses", "push", 1) and str(refused.value).startswith(
        "addresses.push[1]: "
    )


def test_a_patch_keeps_known_addresses_activity_and_merges_attributes() -> None:
    user = devices().model_copy(update={"attributes": {"year": 2020, "faculty": "law"}})
    patch = PersonPatch.model_validate(
        {
            "attributes": {"year": None, "minor": "art"},
            "addresses": {"push": ["fcm:newest-token-0123456789", "fcm:primary-token-0123456789"]},
        }
    )
    changed = changed_person(user, patch, NOW + timedelta(days=1))
    assert changed.attributes == {"faculty": "law", "minor": "art"}
    assert [a.last_active for a in changed.addresses["push"]] == [NEW, OLD]
    assert changed.bindings["push"] == "fcm:newest-token-0123456789" and changed.addresses["email"]


def test_the_audit_view_holds_no_address() -> None:
    shown = str(audited_view(devices()))
    assert "fcm:" not in shown and "uni.example" not in shown and "addr:" in shown


def test_each_address_of_an_all_send_has_its_own_send_key() -> None:
    event = EventCore(event_id="e", app="lms", type="t", template="course_reminder", category="notice")
    one = Dispatch(
        message_id="m",
        user_id="u",
        channel="push",
        address="fcm:a",
        event=event,
        rule_id="r",
        rule_version="1",
    )
    assert send_key(one) == ("m", "push", 0)  # as before: a redelivery of an older dispatch matches
    a, b = (one.model_copy(update={"address": x, "every_address": True}) for x in ("fcm:a", "fcm:b"))
    assert send_key(a) != send_key(b) and send_key(a)[1].startswith("push@") and send_key(a) == send_key(a)


def test_the_import_shows_no_progress_bar_when_stderr_is_no_terminal(tmp_path: Path) -> None:
    from api.people_cli import import_progress

    path = tmp_path / "people.csv"
    path.write_text("user_id\nu1\n")
    with import_progress(path) as progress:  # pytest captures stderr: not a terminal
        assert progress is None

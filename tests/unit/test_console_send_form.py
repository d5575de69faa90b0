"""The send screen's form as a campaign composition: each target, time and mistake, field by field."""

from __future__ import annotations

from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from api.console.pages.send_form import ComposerForm, composition_of, refusal_errors


def _form(**fields: object) -> ComposerForm:
    base: dict[str, object] = {"app": "school", "name": "Exam notice", "template": "notice",
                               "target": "segment", "segment": "grade_2020", "data": '{"course": "Maths"}'}
    return ComposerForm(**(base | fields))  # type: ignore[arg-type]


def test_a_segment_target_with_channels_now() -> None:
    parsed = composition_of(_form(channels=["email", "inbox"]))
    assert parsed.errors == {}
    composition = parsed.composition
    assert composition is not None
    assert composition.audience.segment == "grade_2020"
    assert composition.channels == ["email", "inbox"]
    assert composition.send_at is None and composition.pace_per_second is None
    assert composition.data == {"course": "Maths"}


def test_no_channel_chosen_leaves_them_to_the_rules() -> None:
    composition = composition_of(_form()).composition
    assert composition is not None and composition.channels is None


def test_tags_and_user_ids_split_on_commas_and_lines() -> None:
    tags = composition_of(_form(target="tags", tags="grade_2020，postgrad_2020\nstaff")).composition
    assert tags is not None and tags.audience.tags == ["grade_2020", "postgrad_2020", "staff"]
    users = composition_of(_form(target="user_ids", user_ids="u1\nu2, u3")).composition
    assert users is not None and users.audience.user_ids == ["u1", "u2", "u3"]


def test_typed_addresses_are_phones_emails_or_channel_prefixed() -> None:
    typed = "13800138000\nstudent@example.edu\npush:tok-1\n"
    composition = composition_of(_form(target="addresses", addresses=typed)).composition
    assert composition is not None and composition.audience.addresses is not None
    assert [(a.channel, a.address) for a in composition.audience.addresses] == [
        ("sms", "13800138000"), ("email", "student@example.edu"), ("push", "tok-1")
    ]


def test_a_bad_address_names_its_line() -> None:
    parsed = composition_of(_form(target="addresses", addresses="13800138000\nnot an address"))
    assert parsed.composition is None
    assert parsed.errors["addresses"].startswith("line 2: 'not an address'")


def test_scheduled_reads_the_local_time_at_the_offset() -> None:
    composition = composition_of(_form(timing="scheduled", send_at="2026-12-01T08:00",
                                       utc_offset="+08:00")).composition
    assert composition is not None and composition.send_at is not None
    assert composition.send_at.isoformat() == "2026-12-01T08:00:00+08:00"


def test_steady_rate_and_bad_time_are_field_errors() -> None:
    steady = composition_of(_form(timing="steady", pace_per_second="50")).composition
    assert steady is not None and steady.pace_per_second == 50
    errors = composition_of(_form(timing="scheduled", send_at="tomorrow", utc_offset="8")).errors
    assert set(errors) == {"utc_offset"}
    errors = composition_of(_form(timing="scheduled", send_at="tomorrow")).errors
    assert "send_at" in errors
    assert "pace_per_second" in composition_of(_form(timing="steady", pace_per_second="fast")).errors


def test_data_must_be_a_json_object() -> None:
    assert "line 1" in composition_of(_form(data="{course: 1}")).errors["data"]
    assert "JSON object" in composition_of(_form(data="[1]")).errors["data"]


def test_an_empty_target_and_a_model_refusal_name_the_field() -> None:
    assert composition_of(_form(segment="")).errors == {"segment": "choose a segment"}
    errors = composition_of(_form(channels=["fax"])).errors
    assert set(errors) == {"channels"}
    assert "priority" in composition_of(_form(priority="asap")).errors


def test_the_apis_refusals_become_field_errors() -> None:
    form = _form()
    unknown = RequestValidationError([{"loc": ("body", "audience", "segment"), "msg": "unknown segment 'x'",
                                       "type": "unknown_segment"}])
    assert refusal_errors(unknown, form) == {"segment": "unknown segment 'x'"}
    missing = RequestValidationError([{"loc": ("body", "data"), "msg": "missing variable course",
                                       "type": "missing_variable"}])
    assert refusal_errors(missing, form) == {"data": "missing variable course"}
    assert refusal_errors(HTTPException(403, "app 'school' is disabled"), form) == {
        "_form": "app 'school' is disabled"
    }


def test_a_form_is_read_back_as_typed() -> None:
    form = ComposerForm.of({"app": " school ", "target": "all", "unknown": "x"}, ["sms", ""])
    assert (form.app, form.target, form.channels) == ("school", "all", ["sms"])
    composition = composition_of(ComposerForm(app="school", target="all", template="t")).composition
    assert composition is not None and composition.audience.all is True

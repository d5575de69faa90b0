"""The console's template editor form (to a draft, refusals beside their field) and the Analytics
page's charts, without services."""

from __future__ import annotations

import pytest

from api.console.pages.analytics_charts import FunnelBars, VariantRate, funnel_chart, variant_chart
from api.console.pages.template_form import draft_of, field_of, form_of_post, form_of_version
from state.template_store import TemplateVersion, Variable

ROWS = {
    "var_name": ["course", "seats", "", "open"],
    "var_type": ["string", "integer", "string", "boolean"],
    "var_required": ["yes", "no", "yes", "yes"],
    "var_sample": ["Linear Algebra", "30", "", "true"],
    "var_description": ["", "", "", ""],
}


def test_a_posted_form_is_the_draft_with_typed_samples_and_without_empty_rows() -> None:
    form = form_of_post({"app": " lms ", "comment": "first", "part_sms": "text: 'Hi {{ course }}'",
                         "part_email": "  "}, ROWS)
    draft = draft_of(form, new=True)
    assert draft is not None, form.errors
    assert draft.app == "lms"
    assert draft.parts() == {"sms": {"text": "Hi {{ course }}"}}
    assert [(v.name, v.sample, v.required) for v in draft.variables] == [
        ("course", "Linear Algebra", True), ("seats", 30, False), ("open", True, True)
    ]


def test_a_later_version_names_no_app_and_a_bad_part_is_refused_beside_it() -> None:
    form = form_of_post({"app": "shop", "part_sms": "text: [unclosed", "part_inbox": "just text"}, {})
    assert draft_of(form, new=False) is None
    assert form.errors["part_sms"].startswith("sms: not valid YAML")
    assert form.errors["part_inbox"] == "inbox: a part is a mapping of its fields (subject: ...)"


def test_a_bad_variable_name_is_refused_beside_the_variables() -> None:
    form = form_of_post({"part_sms": "text: hi"}, {"var_name": ["user"], "var_type": ["string"]})
    assert draft_of(form, new=False) is None
    assert "variables.0.name" in form.errors["variables"]


@pytest.mark.parametrize(
    ("detail", "field"),
    [
        ("template 'x' version (new): sms.text: line 1: unexpected '}'", "part_sms"),
        ("template 'x' version (new): email.subject: needs variable(s) day", "part_email"),
        ("app: required for the first version of template 'x' (its owner)", "app"),
        ("template 'x' belongs to app 'lms', not 'shop'", "app"),
        ("template 'x' version (new): day: sample 'Sept 1' is not a date", "variables"),
        ("something else entirely", "general"),
    ],
)
def test_a_refusal_goes_beside_the_field_it_names(detail: str, field: str) -> None:
    assert field_of(detail) == field


def test_the_editor_of_a_next_version_starts_from_the_latest() -> None:
    latest = TemplateVersion(
        number=3, author="tia", parts={"inbox": {"title": "T", "body": "B"}},
        variables=(Variable(name="open", type="boolean", sample=False),),
    )
    form = form_of_version(latest, blank_rows=1)
    assert form.parts == {"inbox": "title: T\nbody: B\n"}
    assert form.variables[0] == {"name": "open", "type": "boolean", "required": "yes", "sample": "false",
                                 "description": ""}
    assert form.variables[1]["name"] == ""


def test_the_funnel_chart_draws_every_stage_of_a_group_on_one_scale_and_escapes_labels() -> None:
    svg = str(funnel_chart([FunnelBars("<b>sms</b>", [4, 2]), FunnelBars("email", [2, 0])],
                           ("decided", "sent"), "funnel"))
    assert "&lt;b&gt;sms&lt;/b&gt;" in svg and "<b>" not in svg
    assert svg.count('class="chart-bar s0"') == 3  # two groups and the legend
    assert 'width="0.0"' in svg  # nothing sent by email: an empty bar, not a missing one
    assert "chart-empty" in str(funnel_chart([], ("decided",), "funnel"))


def test_the_variant_chart_marks_the_baseline_and_each_interval() -> None:
    rates = [VariantRate("a", 0.1, 0.05, 0.2, baseline=True), VariantRate("b", 0.2, 0.1, 0.3)]
    svg = str(variant_chart(rates, "conversion"))
    assert "a ★" in svg and svg.count("<line") == 2 and svg.count("<circle") == 2
    assert "b: 20.00% (10.00%–30.00%)" in svg

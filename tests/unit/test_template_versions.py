"""Stored template versions in the catalog: checked at save like a file, typed variables, previews,
diffs, and the live versions living beside the files through a rules-and-templates reload."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from channels.sensitive import SensitiveWords
from channels.template_versions import Pricing, compile_version, diff, preview, type_problem
from channels.templates import TemplateCatalog, TemplateError
from rules.watch import RulesWatcher
from settings import ROOT
from state.template_store import TemplateVersion, Variable

FEE = TemplateVersion(
    number=3,
    author="tia",
    variables=(Variable(name="amount", type="number", sample=1200),
               Variable(name="due", type="date", sample="2026-09-01"),
               Variable(name="link", type="url", required=False, sample="https://pay.example.edu/x")),
    parts={"sms": {"text": "【示例大学】Tuition {{ amount }} due {{ due }}"},
           "inbox": {"title": "Tuition due {{ due }}", "body": "Pay {{ amount }}", "link": "{{ link }}"}},
)


@pytest.fixture
def catalog() -> TemplateCatalog:
    return TemplateCatalog(ROOT / "templates")


def test_a_live_version_renders_with_its_number_and_files_stay_version_0(catalog: TemplateCatalog) -> None:
    catalog.adopt_stored({"fee_notice": compile_version(catalog, "fee_notice", FEE)})
    data = {"amount": 1200, "due": "2026-09-01"}
    assert catalog.render("fee_notice", "sms", data, None).version == 3
    assert catalog.render("fee_notice", "sms", data, None).text == "【示例大学】Tuition 1200 due 2026-09-01"
    file = catalog.render("campus_notice", "inbox", {"headline": "h", "body": "b"}, None)
    assert file.version == 0 and catalog.version_of("campus_notice") == 0


def test_declared_types_are_checked_where_events_are(catalog: TemplateCatalog) -> None:
    catalog.adopt_stored({"fee_notice": compile_version(catalog, "fee_notice", FEE)})
    assert catalog.check_data("fee_notice", {"amount": "1200.50", "due": "2026-09-01"}) == []
    [problem] = catalog.check_data("fee_notice", {"amount": "lots", "due": "Sept 1", "link": "javascript:x"})
    assert problem == (
        "template 'fee_notice' version 3: amount: 'lots' is not a number; due: 'Sept 1' is not a date "
        "(e.g. 2026-09-01); link: 'javascript:x' is not a url (e.g. https://example.edu/x or /path)"
    )
    assert type_problem("integer", 2.5) == "2.5 is not an integer"
    assert type_problem("boolean", True) is None


@pytest.mark.parametrize(
    ("parts", "variables", "error"),
    [
        ({"sms": {"text": "{{ amount }"}}, (), "sms.text: line 1: unexpected '}'"),
        ({"inbox": {"title": "{{ coupon }}", "body": "b"}}, (),
         "inbox.title uses undeclared variable(s) coupon"),
        ({"inbox": {"title": "t"}}, (), "inbox.body: Field required"),
        ({"fax": {"text": "t"}}, (), "fax: Extra inputs are not permitted"),
        ({}, (), "no channel part"),
        ({"sms": {"text": "{{ n }}"}}, (Variable(name="n", type="number", sample="ten"),),
         "variables.n.sample: 'ten' is not a number"),
    ],
)
def test_a_version_is_refused_at_save_as_a_file_would_be_at_load(
    catalog: TemplateCatalog, parts: dict[str, dict[str, str]], variables: tuple[Variable, ...], error: str
) -> None:
    draft = TemplateVersion(author="tia", parts=parts, variables=variables)
    with pytest.raises(TemplateError) as refused:
        compile_version(catalog, "draft", draft)
    assert str(refused.value).startswith("template 'draft' version (new): ")
    assert error in str(refused.value)


def test_the_preview_counts_segments_prices_them_and_names_the_problems(catalog: TemplateCatalog) -> None:
    words = SensitiveWords([("Tuition", "block")])
    shown = preview(catalog, "fee_notice", FEE, None, words, {"sms": Pricing(0.05, per_segment=True),
                                                             "inbox": Pricing(0.0)})
    assert shown["inbox"]["fields"]["link"] == "https://pay.example.edu/x"
    assert shown["sms"]["sms"]["encoding"] == "ucs2" and shown["sms"]["sms"]["segments"] == 1
    assert shown["sms"]["estimated_cost"] == 0.05
    assert any("content:" in p and "Tuition" in p for p in shown["sms"]["problems"])
    long = FEE.model_copy(update={"parts": {"sms": {"text": "【示例大学】" + "学费" * 40 + "{{ amount }}"}}})
    assert preview(catalog, "fee_notice", long, None, None, {"sms": Pricing(0.05, per_segment=True)})[
        "sms"]["estimated_cost"] == 0.1
    missing = preview(catalog, "fee_notice", FEE, {"due": "2026-09-01"})
    assert missing["sms"]["problems"] == ["sandbox: template 'fee_notice' needs variable(s) amount"]
    assert "fee_notice" not in catalog  # a preview leaves the catalog as it was


def test_the_diff_shows_each_changed_part_and_the_variables() -> None:
    newer = FEE.model_copy(update={
        "number": 4,
        "parts": {**FEE.parts, "sms": {"text": "【示例大学】Fees {{ amount }} due {{ due }}"}},
        "variables": FEE.variables[:2],
    })
    changes = diff(FEE, newer, "fee_notice")
    assert set(changes) == {"sms", "variables"}
    assert changes["sms"].startswith("--- fee_notice@3/sms\n+++ fee_notice@4/sms\n")
    assert "+text: 【示例大学】Fees {{ amount }} due {{ due }}" in changes["sms"]
    assert "-- name: link\n-  required: false\n" in changes["variables"]


def test_reloading_rules_and_template_files_keeps_the_live_stored_versions(tmp_path: Path) -> None:
    folder = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", folder)
    rules = tmp_path / "rules.yaml"
    rules.write_text("ruleset: t\nrules:\n  - id: all\n    description: all\n    then: {channels: [inbox]}\n")
    catalog = TemplateCatalog(folder)
    catalog.adopt_stored({"fee_notice": compile_version(catalog, "fee_notice", FEE)})
    watcher = RulesWatcher(rules, folder, catalog=catalog)
    (folder / "extra.yaml").write_text("inbox: {title: t, body: b}\n")
    watcher.poll()
    assert "extra" in catalog and catalog.version_of("fee_notice") == 3
    # A file of a stored template's name wins (the API refuses to create such a name).
    (folder / "fee_notice.yaml").write_text("inbox: {title: file, body: b}\n")
    watcher.poll()
    assert catalog.is_file("fee_notice") and catalog.version_of("fee_notice") == 0

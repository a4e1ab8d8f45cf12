"""Template rendering: seed syntax, required/optional variables, no code evaluation."""

from __future__ import annotations

import pytest

from rhetor.errors import RequestError
from rhetor.templates import TemplateDef, parse_variables, render

BUG = """Analyze the following bug report:
{bug_description}
Steps: {reproduction_steps}
Environment: {environment}"""


def test_seed_template_renders_with_optional_default() -> None:
    t = TemplateDef.create("bug_report_analysis", BUG, required=["bug_description", "reproduction_steps"],
                           optional={"environment": "Not specified"})
    assert t.required == ("bug_description", "reproduction_steps")
    out = render(t, {"bug_description": "crash", "reproduction_steps": "click"})
    assert out == "Analyze the following bug report:\ncrash\nSteps: click\nEnvironment: Not specified"


def test_undeclared_variables_are_required() -> None:
    t = TemplateDef.create("t", "Hello {name}, {greeting}", optional=["greeting"])
    assert t.required == ("name",) and dict(t.optional) == {"greeting": ""}
    assert render(t, {"name": "Ada"}) == "Hello Ada, "


def test_missing_required_variables_are_named_together() -> None:
    t = TemplateDef.create("t", "{a} {b} {c}", optional=["c"])
    with pytest.raises(RequestError) as info:
        render(t, {"b": 1})
    assert info.value.details["missing"] == ["a"] and info.value.status == 400
    with pytest.raises(RequestError) as info:
        render(t, {})
    assert info.value.details["missing"] == ["a", "b"]


@pytest.mark.parametrize("content", ["{x.__class__}", "{x!r}", "{x:>10}", "{0}", "{ x }", "{__import__('os')}"])
def test_anything_but_plain_names_is_refused(content: str) -> None:
    with pytest.raises(RequestError) as info:
        parse_variables(content)
    assert info.value.details["field"] == "content"


def test_values_are_never_interpreted() -> None:
    t = TemplateDef.create("t", "{a}")
    assert render(t, {"a": "{b} {__class__} {{x}}"}) == "{b} {__class__} {{x}}"


def test_literal_braces_and_unbalanced_braces() -> None:
    t = TemplateDef.create("t", 'JSON like {{"k": {v}}}')
    assert render(t, {"v": 1}) == 'JSON like {"k": 1}'
    with pytest.raises(RequestError, match="unbalanced"):
        parse_variables("oops { here")


def test_declared_but_unused_variables_are_refused() -> None:
    with pytest.raises(RequestError) as info:
        TemplateDef.create("t", "{a}", required=["a", "b"])
    assert info.value.details["unused"] == ["b"]


def test_template_errors_as_callers_see_them(snapshot) -> None:
    """The JSON error bodies of the three ways a template goes wrong, pinned."""
    bodies = {}
    t = TemplateDef.create("bug_report_analysis", BUG, required=["bug_description", "reproduction_steps"],
                           optional={"environment": "Not specified"})
    for name, action in {
        "missing_variables": lambda: render(t, {"bug_description": "crash"}),
        "code_in_template": lambda: TemplateDef.create("t", "{x.__class__}"),
        "unused_declared": lambda: TemplateDef.create("t", "{a}", required=["a", "b"]),
    }.items():
        with pytest.raises(RequestError) as info:
            action()
        bodies[name] = {"status": info.value.status, **info.value.to_dict()}
    assert bodies == snapshot

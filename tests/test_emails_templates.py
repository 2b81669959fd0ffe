"""The environment email templates are checked and rendered in: one per kind of text."""

from __future__ import annotations

import pytest
from jinja2.exceptions import SecurityError

from envoi.emails.templates import HTML_KINDS, make_environment, template_error
from envoi.emails.variants import KINDS

PROFILE = {"name": '<script>alert("x")</script> & Co'}


@pytest.mark.parametrize("kind", ["text_html", "x_amp_html"])
def test_html_kinds_escape_recipients_data(kind: str) -> None:
    environment = make_environment(kind)
    rendered = environment.from_string("<p>Hello {{ name }}</p>").render(PROFILE)
    assert rendered == "<p>Hello &lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; Co</p>"
    # `|safe` is the template author's explicit opt-out.
    assert environment.from_string("{{ name|safe }}").render(PROFILE) == PROFILE["name"]


@pytest.mark.parametrize("kind", ["subject", "text_plain"])
def test_subject_and_plain_text_are_not_escaped(kind: str) -> None:
    rendered = make_environment(kind).from_string("Hello {{ name }}").render(PROFILE)
    assert rendered == f"Hello {PROFILE['name']}"


def test_every_kind_has_an_environment_and_only_html_kinds_autoescape() -> None:
    assert set(KINDS) > HTML_KINDS
    for kind in KINDS:
        assert make_environment(kind).autoescape is (kind in HTML_KINDS)
    with pytest.raises(ValueError, match="unknown template kind 'file_html'"):
        make_environment("file_html")


def test_the_environment_is_a_sandbox() -> None:
    template = make_environment("text_html").from_string("{{ ''.__class__.__mro__ }}")
    with pytest.raises(SecurityError):
        template.render()


def test_template_error_checks_against_the_given_environment() -> None:
    environment = make_environment("text_plain")
    assert template_error("{{ n|shout }}", environment) == (
        "template error at line 1: unknown filter 'shout'"
    )
    environment.filters["shout"] = str.upper  # what delivery registers is known here too
    assert template_error("{{ n|shout }}", environment) is None
    assert environment.from_string("{{ n|shout }}").render(n="hi") == "HI"

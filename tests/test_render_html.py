"""Rendering, HTML side: CSS inlined through an HTML parser without breaking the Jinja
in the template, and the text/plain part made from the HTML when the variant has none.
"""

from __future__ import annotations

import re

from envoi.delivery.render import Recipient
from envoi.delivery.text import html_to_text
from tests.render_support import LINKS, compiled, parts, render

# --- CSS and Jinja through the HTML parser ------------------------------------------


def test_css_is_inlined_and_media_queries_kept() -> None:
    source = (
        "<html><head><style>p { color: red } @media (max-width: 600px) { p { color: blue } }"
        "</style></head><body><p>Hi {{ first_name }}</p></body></html>"
    )
    html = parts(render(compiled(source))[1])["text/html"]
    assert '<p style="color: red;">Hi Bob</p>' in html
    assert "@media (max-width: 600px)" in html


def test_jinja_survives_the_html_parser() -> None:
    source = """<style>td { padding: 2px } .c { color: {{ colour }} }</style>
<table>{% for row in rows %}<tr><td class="c">{{ row }}</td></tr>{% endfor %}</table>
<input type="checkbox" {% if checked %}checked{% endif %}>
<p title="{{ title }}">{# a comment #}&#123;&#123; literal &#125;&#125;</p>"""
    recipient = Recipient(
        60, "x@example.org", {}, {"rows": ["r1", "r2"], "colour": "green", "checked": True}
    )
    html = parts(render(compiled(source), recipient)[1])["text/html"]
    assert html.count("<tr>") == 2
    assert re.search(r"<table>.*r1.*r2.*</table>", html, re.DOTALL)
    assert 'style="padding: 2px;color: green;">r1' in html.replace("; ", ";")
    assert '<input type="checkbox" checked>' in html
    assert "{{ literal }}" in html
    unchecked = Recipient(61, "x@example.org", {}, {"rows": [], "checked": False})
    assert '<input type="checkbox" >' in parts(render(compiled(source), unchecked)[1])["text/html"]


# --- text from HTML ------------------------------------------------------------------


def test_html_to_text_keeps_what_a_reader_needs() -> None:
    source = """<html><head><title>T</title><style>p{}</style></head><body>
<h1>Title</h1><p>First   paragraph
with a line<br>break.</p><ul><li>one</li><li>two</li></ul><ol><li>a</li><li>b</li></ol>
<table><tr><td>cell 1</td><td>cell 2</td></tr><tr><td>cell 3</td></tr></table>
<img src="x.png" alt="Logo"><script>var x = 1;</script><pre>  keep   this
  as is</pre><p>&#123;&#123; not a variable &#125;&#125;</p></body></html>"""
    text = html_to_text(source, [])
    assert text == (
        "Title\n\nFirst paragraph with a line\nbreak.\n\n- one\n- two\n\n1. a\n2. b\n\n"
        "cell 1 cell 2\ncell 3\n\nLogo\n  keep   this\n  as is\n\n"
        "{{ '{' }}{ not a variable }}\n"
    )


def test_a_variants_own_text_is_used() -> None:
    text = parts(render(compiled(text_plain="Plain {{ first_name }}"))[1])["text/plain"]
    assert text.startswith("Plain Bob\n")
    assert f"Unsubscribe: {LINKS.unsubscribe(41)}" in text


def test_the_doctype_and_outlook_conditional_comments_are_kept() -> None:
    doctype = (
        '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN" '
        '"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">'
    )
    source = (
        f"{doctype}<html><head><style>p {{ color: red }}</style></head><body>"
        "<!--[if mso]><table><tr><td><![endif]--><p>Hi</p><!--[if mso]></td></tr></table>"
        "<![endif]--></body></html>"
    )
    html = parts(render(compiled(source))[1])["text/html"]
    assert html.startswith(doctype)
    assert "<!--[if mso]><table><tr><td><![endif]-->" in html
    assert '<p style="color: red;">Hi</p>' in html

"""Rendering: what a recipient's mail client gets, for the structure, the headers, the
personalisation and the language. Every message is parsed back with the standard
library's `email` package (policy.default), so structure, headers and decoded bodies
are checked by an independent reader, not by the code that wrote them. Links:
test_render_links.py; CSS, Jinja through the HTML parser and the text part made from
the HTML: test_render_html.py.
"""

from __future__ import annotations

import re
from email.message import EmailMessage
from email.utils import parsedate_to_datetime
from typing import cast

import pytest

from envoi.core.errors import Invalid
from envoi.delivery.render import (
    MessageContext,
    Recipient,
    RenderError,
    choose_content,
    compile_message,
)
from tests.render_support import (
    BOB,
    CONTEXT,
    LINKS,
    assert_wire_format,
    compiled,
    make_email,
    parse,
    parts,
    render,
    variant,
)

# --- structure and headers ---------------------------------------------------------


def test_multipart_alternative_with_text_then_html_in_utf8_quoted_printable() -> None:
    raw, message = render(compiled())
    assert message.get_content_type() == "multipart/alternative"
    inner = cast(list[EmailMessage], list(message.iter_parts()))
    assert [part.get_content_type() for part in inner] == ["text/plain", "text/html"]
    for part in inner:
        assert part.get_content_charset() == "utf-8"
        assert part["Content-Transfer-Encoding"] == "quoted-printable"
    assert message.defects == []
    assert all(part.defects == [] for part in inner)
    assert_wire_format(raw)


def test_amp_part_sits_between_text_and_html() -> None:
    amp = "<!doctype html><html ⚡4email><body>AMP for {{ first_name }}</body></html>"
    _, message = render(compiled(x_amp_html=amp))
    assert list(parts(message)) == ["text/plain", "text/x-amp-html", "text/html"]
    assert "AMP for Bob" in parts(message)["text/x-amp-html"]


def test_the_headers_of_the_brief() -> None:
    message_compiled = compiled()
    _, message = render(message_compiled)
    token = LINKS.send_header(BOB.send_id)
    assert message["From"] == "Shop <news@example.com>"
    assert message["To"] == "bob@example.org"
    assert message["Subject"] == "News for Bob"
    assert parsedate_to_datetime(message["Date"]).tzinfo is not None
    assert message["Message-ID"] == f"<{token}@example.com>"
    assert message["MIME-Version"] == "1.0"
    unsubscribe = LINKS.unsubscribe(BOB.send_id)
    mailto = LINKS.unsubscribe_mailto(BOB.send_id, CONTEXT.bounce_domain)
    assert message["List-Unsubscribe"] == f"<{unsubscribe}>, <mailto:{mailto}>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert message["Feedback-ID"] == "12:L:3:envoi"
    assert message["X-Envoi-Send"] == token
    assert message["X-Envoi-Tags"] == "news, spring sale"
    # The envelope carries the VERP return path; the message does not.
    assert message["Return-Path"] is None
    assert (message_compiled.from_address, message_compiled.from_domain) == (
        "news@example.com",
        "example.com",
    )


def test_a_message_without_campaign_or_tags() -> None:
    content = variant(subject="Hi", text_html="<p>x</p>")
    context = MessageContext(3, None, None, "T", (), "bounces.example.com")
    raw = compile_message(make_email(content), content, context, LINKS).render(BOB)
    message = parse(raw)
    assert message["Feedback-ID"] == "0:T:3:envoi"
    assert message["X-Envoi-Tags"] is None


def test_each_compilation_has_its_own_boundary_and_messages_differ_per_recipient() -> None:
    first, second = compiled(), compiled()
    assert parse(first.render(BOB)).get_boundary() != parse(second.render(BOB)).get_boundary()
    alice = Recipient(42, "alice@example.org", {"first_name": "Alice"}, {})
    a, b = parse(first.render(BOB)), parse(first.render(alice))
    assert a["Message-ID"] != b["Message-ID"]
    assert a["To"] != b["To"]


def test_a_text_only_email_is_one_text_plain_part() -> None:
    _, message = render(compiled(None, text_plain="Hello {{ first_name }}"))
    assert message.get_content_type() == "text/plain"
    assert not message.is_multipart()
    assert parts(message)["text/plain"].startswith("Hello Bob\n")


def test_amp_without_html_is_not_sent_alone() -> None:
    _, message = render(compiled(None, text_plain="Hi", x_amp_html="<html ⚡4email></html>"))
    assert message.get_content_type() == "text/plain"


# --- non-ASCII -----------------------------------------------------------------------


def test_non_ascii_subject_sender_and_bodies() -> None:
    subject = "Привет, {{ first_name }}! 春のセール 🎉 — скидки до 50% на всё, что вы любите"
    message_compiled = compiled(
        "<p>Здравствуйте, {{ first_name }}! 你好 🎉 {{ city }}</p>",
        subject=subject,
        from_address="Магазин «Весна» <shop@example.com>",
    )
    recipient = Recipient(5, "ivan@example.org", {"first_name": "Иван", "city": "Zürich"}, {})
    raw, message = render(message_compiled, recipient)
    assert raw.isascii()  # everything travels as RFC 2047 words and quoted-printable
    assert_wire_format(raw)
    expected = "Привет, Иван! 春のセール 🎉 — скидки до 50% на всё, что вы любите"
    assert message["Subject"] == expected
    assert message["From"].addresses[0].display_name == "Магазин «Весна»"
    assert message["From"].addresses[0].addr_spec == "shop@example.com"
    bodies = parts(message)
    assert "Здравствуйте, Иван! 你好 🎉 Zürich" in bodies["text/html"]
    assert "Здравствуйте, Иван! 你好 🎉 Zürich" in bodies["text/plain"]
    # Encoded words stay within RFC 2047's 75 characters.
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    assert all(len(word) <= 75 for word in re.findall(r"=\?utf-8\?b\?[^?]*\?=", head))


def test_display_names_with_specials_are_quoted() -> None:
    raw, message = render(compiled(from_address="Shop, Inc. <news@example.com>"))
    assert message["From"].addresses[0].display_name == "Shop, Inc."
    assert b'\r\nFrom: "Shop, Inc." <news@example.com>\r\n' in b"\r\n" + raw


def test_long_ascii_subject_is_folded() -> None:
    words = " ".join(f"word{i}" for i in range(60))
    raw, message = render(compiled(subject=words))
    assert message["Subject"] == words
    assert_wire_format(raw)


def test_a_value_cannot_add_headers() -> None:
    sneaky = Recipient(6, "eve@example.org", {"first_name": "Eve\r\nBcc: all@example.org"}, {})
    raw, message = render(compiled(), sneaky)
    assert message["Bcc"] is None
    assert b"\r\nBcc:" not in raw.split(b"\r\n\r\n", 1)[0]
    assert message["Subject"] == "News for Eve Bcc: all@example.org"


# --- personalisation ----------------------------------------------------------------


def test_profile_fields_params_and_the_named_variables() -> None:
    html = (
        "<p>{{ first_name }}|{{ city }}|{{ coupon }}|{{ profile.city }}|{{ params.coupon }}"
        "|{{ email }}|{{ unsubscribe_url }}|{{ web_view_url }}</p>"
    )
    body = parts(render(compiled(html))[1])["text/html"]
    unsubscribe, web = LINKS.unsubscribe(41), LINKS.mirror(41)
    assert f"Bob|Paris|SPRING10|Paris|SPRING10|bob@example.org|{unsubscribe}|{web}" in body


def test_params_win_over_profile_fields() -> None:
    recipient = Recipient(8, "b@example.org", {"first_name": "Bob"}, {"first_name": "Robert"})
    _, message = render(compiled(), recipient)
    assert message["Subject"] == "News for Robert"
    assert "Hello Robert!" in parts(message)["text/html"]


def test_missing_variables_render_empty() -> None:
    html = "<p>[{{ nope }}][{{ nope.deeper.still }}][{{ profile.nope }}][{{ nope['x'] }}]</p>"
    nobody = Recipient(9, "x@example.org", {}, {})
    _, message = render(compiled(html, subject="Hi {{ first_name }}"), nobody)
    assert "[][][][]" in parts(message)["text/html"]
    assert message["Subject"] == "Hi"


def test_recipients_data_is_escaped_in_html_only() -> None:
    recipient = Recipient(10, "x@example.org", {"first_name": "<b>Tom & Jerry</b>"}, {})
    _, message = render(compiled(text_plain="Hi {{ first_name }}"), recipient)
    bodies = parts(message)
    assert "Hello &lt;b&gt;Tom &amp; Jerry&lt;/b&gt;!" in bodies["text/html"]
    assert bodies["text/plain"].startswith("Hi <b>Tom & Jerry</b>")
    assert message["Subject"] == "News for <b>Tom & Jerry</b>"


def test_the_sandbox_refuses_unsafe_access() -> None:
    for source in (
        "{{ ''.__class__.__mro__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ profile.__class__.__subclasses__() }}",
    ):
        with pytest.raises(RenderError, match="SecurityError"):
            compiled(f"<p>{source}</p>").render(BOB)
    # An unsafe attribute alone renders as nothing: it reveals nothing either.
    body = parts(render(compiled("<p>[{{ ''.__class__ }}]</p>"))[1])["text/html"]
    assert "[]" in body


def test_a_template_failing_on_a_recipients_data_is_a_render_error() -> None:
    message = compiled("<p>{{ 10 // count }}</p>")
    with pytest.raises(RenderError, match="ZeroDivisionError"):
        message.render(Recipient(11, "x@example.org", {"count": 0}, {}))
    assert (
        "5"
        in parts(render(message, Recipient(12, "x@example.org", {"count": 2}, {}))[1])["text/html"]
    )


def test_a_template_that_does_not_compile_is_invalid() -> None:
    with pytest.raises(Invalid, match="text_html does not compile") as caught:
        compiled("<p>{% if x %}</p>")
    assert caught.value.loc == ["body", "text_html"]
    content = variant("ru", subject="{{ x", text_html="<p>x</p>")
    with pytest.raises(Invalid, match="subject_ru does not compile"):
        compile_message(make_email(content), content, CONTEXT, LINKS)


# --- language ---------------------------------------------------------------------------


def test_the_profiles_language_then_the_default_then_the_first() -> None:
    default = variant("", subject="Hello", text_html="<p>hello</p>")
    russian = variant("ru", subject="Привет", text_html="<p>привет</p>")
    german = variant("de", subject="Hallo", text_html="<p>hallo</p>")
    both = make_email(default, russian)
    assert choose_content(both, "ru") is russian
    assert choose_content(both, "fr") is default
    assert choose_content(both, None) is default
    message = compile_message(both, choose_content(both, "ru"), CONTEXT, LINKS)
    assert message.language == "ru"
    assert parse(message.render(BOB))["Subject"] == "Привет"
    # (A variant belongs to one email: the next one gets its own.)
    no_default = make_email(german, variant("ru", text_html="<p>привет</p>"))
    assert choose_content(no_default, "fr") is german


def test_a_variant_with_only_a_subject_is_passed_over_and_subjects_fall_back() -> None:
    default = variant("", subject="Hello", text_html="<p>hello</p>")
    subject_only = variant("ru", subject="Привет")
    body_only = variant("de", text_html="<p>hallo</p>")
    message = make_email(default, subject_only, body_only)
    assert choose_content(message, "ru") is default
    german = compile_message(message, choose_content(message, "de"), CONTEXT, LINKS)
    assert parse(german.render(BOB))["Subject"] == "Hello"


def test_an_email_without_any_body_is_invalid() -> None:
    with pytest.raises(Invalid, match="no text to send"):
        choose_content(make_email(variant("", subject="Only a subject")), None)

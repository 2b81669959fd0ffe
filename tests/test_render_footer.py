"""The footer links envoi adds (web view, unsubscribe) speak the language of the
variant sent, and quoted-printable bodies survive any text (mime.quoted_printable)."""

from __future__ import annotations

import binascii
import random

import pytest

from envoi.delivery.mime import quoted_printable
from envoi.delivery.render import (
    FOOTER_LABELS,
    UNSUBSCRIBE_LABEL,
    WEB_VIEW_LABEL,
    choose_content,
    compile_message,
    footer_labels,
)
from tests.render_support import BOB, CONTEXT, LINKS, PAGE, make_email, parse, parts, variant


def _footer(language: str | None, *variants: str) -> tuple[str, str]:
    """(HTML, text) of BOB's message from an email with a variant in each language of
    `variants` ("" the default one), sent for a profile in `language`."""
    contents = [variant(code, subject="Hi", text_html=PAGE) for code in variants]
    email = make_email(*contents)
    message = compile_message(email, choose_content(email, language), CONTEXT, LINKS)
    found = parts(parse(message.render(BOB)))
    return found["text/html"], found["text/plain"]


@pytest.mark.parametrize("language", ["en", "fr", "de", "es", "it", "pt", "nl", "pl", "ru"])
def test_the_footer_links_speak_the_language_of_the_variant(language: str) -> None:
    web_view, unsubscribe = FOOTER_LABELS[language]
    html, text = _footer(language, "", language)
    assert f'href="{LINKS.mirror(41)}"' in html
    assert f">{web_view}</a>" in html
    assert f">{unsubscribe}</a>" in html
    assert f"{web_view}: {LINKS.mirror(41)}" in text
    assert f"{unsubscribe}: {LINKS.unsubscribe(41)}" in text


def test_the_default_variant_and_unknown_languages_get_english() -> None:
    # The profile's language has no variant: the default one is sent, in English.
    html, text = _footer("fr", "", "de")
    assert f">{WEB_VIEW_LABEL}</a>" in html
    assert f"{UNSUBSCRIBE_LABEL}: {LINKS.unsubscribe(41)}" in text
    assert "Abmelden" not in html
    assert footer_labels("") == (WEB_VIEW_LABEL, UNSUBSCRIBE_LABEL)
    assert footer_labels("xx") == (WEB_VIEW_LABEL, UNSUBSCRIBE_LABEL)
    assert footer_labels("pt-BR") == FOOTER_LABELS["pt"]
    assert footer_labels("DE") == FOOTER_LABELS["de"]


def test_quoted_printable_decodes_back_to_the_text_in_lines_of_76() -> None:
    pieces = ["a", " ", "\t", "=", ".", "\n", "é", "\x00", "x" * 80, "€", "\r\n", "a" * 71]
    pieces += ["a" * 72, "a" * 73, "a=b" * 30, "\n.\n", "=" * 80, "  \n", "😀", "<p>"]
    chance = random.Random(4)  # noqa: S311 - reproducible test data, no secret
    for _ in range(5000):
        text = "".join(chance.choice(pieces) for _ in range(chance.randint(0, 60)))
        encoded = quoted_printable(text)
        normal = text.replace("\r\n", "\n").replace("\r", "\n")
        assert binascii.a2b_qp(encoded) == (normal.replace("\n", "\r\n") + "\r\n").encode()
        lines = encoded.split(b"\r\n")
        assert lines[-1] == b""
        assert b"\r" not in b"".join(lines)
        assert b"\n" not in b"".join(lines)
        assert all(32 <= octet < 127 or octet == 9 for octet in b"".join(lines))
        assert all(not line.endswith((b" ", b"\t")) for line in lines)
    # Rendered HTML (one long line of ASCII) in lines of at most 76, no lone dot.
    html = '<p style="color: red">' + "x" * 70 + "=" * 5 + "\n.\n" + "<a href='u?a=b'>" * 40
    encoded = quoted_printable(html)
    lines = encoded.split(b"\r\n")
    assert max(map(len, lines)) <= 76
    assert b"." not in lines
    assert binascii.a2b_qp(encoded) == (html.replace("\n", "\r\n") + "\r\n").encode()

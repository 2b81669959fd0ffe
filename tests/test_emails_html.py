"""The pure parts of uploads: reading HTML bytes, rewriting references, zip entry paths."""

from __future__ import annotations

import pytest

from envoi.core.addresses import AddressError, check_sender
from envoi.emails.htmlfiles import decode_html, rewrite_references, text_encoding
from envoi.emails.uploads import UploadError, member_path

BASE = "https://envoi.example.com/assets/KEY/default/"
FILES = {"mail/img/a.png", "mail/img/b c.png", "shared/logo.png"}


@pytest.mark.parametrize(
    ("html", "expected"),
    [
        ("<img src=img/a.png>", f"<img src={BASE}mail/img/a.png>"),
        ('<IMG SRC = "./img/a.png">', f'<IMG SRC = "{BASE}mail/img/a.png">'),
        ('<img src="../shared/logo.png">', f'<img src="{BASE}shared/logo.png">'),
        ('<img src="img/b%20c.png#x">', f'<img src="{BASE}mail/img/b%20c.png#x">'),
        (
            '<td style="background:url(img/a.png)">',
            f'<td style="background:url({BASE}mail/img/a.png)">',
        ),
        # Left alone: other attributes, escapes from the zip, absolute and root paths.
        ('<img data-src="img/a.png">', '<img data-src="img/a.png">'),
        ('<img src="../../etc/a.png">', '<img src="../../etc/a.png">'),
        ('<img src="/mail/img/a.png">', '<img src="/mail/img/a.png">'),
        ('<img src="cid:img/a.png">', '<img src="cid:img/a.png">'),
        ('<img src="//cdn.example.com/img/a.png">', '<img src="//cdn.example.com/img/a.png">'),
        ('<img src="img/{{ name }}.png">', '<img src="img/{{ name }}.png">'),
    ],
)
def test_rewrite_references(html: str, expected: str) -> None:
    assert rewrite_references(html, "mail", FILES, BASE) == expected


def test_ambiguous_case_insensitive_match_is_left_alone() -> None:
    files = {"a.png", "A.png"}
    assert rewrite_references('<img src="a.PNG">', "", files, BASE) == '<img src="a.PNG">'


def test_decode_html_prefers_declared_charset_then_utf8_then_meta() -> None:
    assert decode_html("é".encode("latin-1"), "latin-1") == "é"
    assert decode_html("é".encode()) == "é"
    assert decode_html(b'<meta charset="x-unknown">\xe9') == '<meta charset="x-unknown">é'


@pytest.mark.parametrize(
    ("label", "codec"),
    [
        ("windows-1251", "cp1251"),
        ("UTF-8", "utf-8"),
        ("latin1", "iso8859-1"),
        ("Shift_JIS", "shift_jis"),
        ("koi8-r", "koi8-r"),
        # Bytes-to-bytes codecs, Python's own text codecs, and no codec at all.
        ("hex", None),
        ("rot13", None),
        ("base64", None),
        ("zlib", None),
        ("idna", None),
        ("unicode_escape", None),
        ("undefined", None),
        ("x-unknown", None),
        ("utf\x008", None),
        ("", None),
    ],
)
def test_text_encoding_accepts_only_character_sets(label: str, codec: str | None) -> None:
    assert text_encoding(label) == codec


def test_decode_html_ignores_charsets_that_are_no_text_encoding() -> None:
    assert decode_html(b"<p>\xe9</p>", "hex") == "<p>é</p>"
    assert decode_html(b"<p>\xe9</p>", "undefined") == "<p>é</p>"
    assert decode_html(b'<meta charset="rot13"><p>\xe9</p>') == '<meta charset="rot13"><p>é</p>'
    assert decode_html(b'<meta charset="idna"><p>\xe9</p>') == '<meta charset="idna"><p>é</p>'


@pytest.mark.parametrize(
    ("name", "path"),
    [
        ("index.html", "index.html"),
        ("./mail//img/a.png", "mail/img/a.png"),
        ("img\\a.png", "img/a.png"),
        ("img/", None),
        ("__MACOSX/._index.html", None),
        ("img/.DS_Store", None),
    ],
)
def test_member_path(name: str, path: str | None) -> None:
    assert member_path(name) == path


@pytest.mark.parametrize("name", ["../a.png", "img/../../a.png", "/a.png", "C:/a.png", "..\\a"])
def test_member_path_refuses_escapes(name: str) -> None:
    with pytest.raises(UploadError, match="unsafe path"):
        member_path(name)


@pytest.mark.parametrize(
    ("value", "stored"),
    [("<a@b.io>", "<a@b.io>"), (' "A, B" <a@b.io>\n', '"A, B" <a@b.io>')],
)
def test_check_sender_accepts_and_trims(value: str, stored: str) -> None:
    assert check_sender(value) == stored


@pytest.mark.parametrize("value", ["a", "A <a@b.io", "a@b.io>", "A <a@b.io>\nBcc: c@d.io"])
def test_check_sender_refuses(value: str) -> None:
    with pytest.raises(AddressError):
        check_sender(value)

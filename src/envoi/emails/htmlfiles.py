"""Uploaded HTML: decode its bytes, and point its references to a zip's files at their
public URLs, so the images of an uploaded newsletter show in every mail client.
"""

from __future__ import annotations

import codecs
import posixpath
import re
from collections.abc import Collection
from urllib.parse import quote, unquote

_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)
# `<meta charset="x">` and `<meta http-equiv="Content-Type" content="text/html; charset=x">`.
_META_CHARSET = re.compile(r"""<meta\b[^>]*?charset\s*=\s*["']?\s*([\w.:-]+)""", re.IGNORECASE)
_VALUE = r"""(?:"(?P<dq>[^"]*)"|'(?P<sq>[^']*)'|(?P<bare>%s))"""
_ATTRIBUTE = re.compile(
    r"(?P<head>(?<![\w-])(?:src|href|background)\s*=\s*)" + _VALUE % r"[^\s\"'<>`=]+",
    re.IGNORECASE,
)
_CSS_URL = re.compile(r"(?P<head>(?<![\w-])url\(\s*)" + _VALUE % r"[^\s\"'()]+", re.IGNORECASE)
# Text codecs of Python that are not character sets of documents.
_NOT_CHARSETS = frozenset(
    {"charmap", "idna", "punycode", "raw-unicode-escape", "undefined", "unicode-escape"}
)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")


def decode_html(data: bytes, declared: str | None = None) -> str:
    """Text of an HTML file: its BOM, else the declared charset, else UTF-8, else the
    charset of its `<meta>`, else cp1252 (what browsers assume for legacy pages).
    A charset that is not a text encoding (see `text_encoding`) is ignored."""
    for bom, bom_codec in _BOMS:
        if data.startswith(bom):
            return data.decode(bom_codec, errors="replace")
    codec = text_encoding(declared) if declared else None
    if codec is not None:
        return data.decode(codec, errors="replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    meta = _META_CHARSET.search(data[:4096].decode("ascii", errors="replace"))
    codec = text_encoding(meta[1]) if meta else None
    return data.decode(codec or "cp1252", errors="replace")


def text_encoding(charset: str) -> str | None:
    """Python's codec for a charset label (`windows-1251` -> `cp1251`), or None when the
    label names no codec or one that is no character set of documents: bytes-to-bytes
    transforms (`hex`, `base64`, `rot13`, `zlib` ...) and Python's own text codecs
    (`idna`, `unicode_escape`, `undefined` ...), some of which cannot even decode."""
    try:
        info = codecs.lookup(charset)
    except (LookupError, ValueError, TypeError):  # ValueError: a NUL in the name
        return None
    # `_is_text_encoding` is how the codecs module itself tells str<->bytes codecs apart.
    if not getattr(info, "_is_text_encoding", True) or info.name in _NOT_CHARSETS:
        return None
    return info.name


def rewrite_references(html: str, html_dir: str, files: Collection[str], base_url: str) -> str:
    """Replace `src=`, `href=`, `background=` and CSS `url()` values that name one of
    `files` (paths relative to the zip's root; `html_dir` is the HTML file's folder)
    by `base_url` + that path. Absolute URLs and unknown paths are left as they are."""
    folded: dict[str, str | None] = {}
    for path in files:
        # A case-insensitive fallback, as the page worked on the author's Windows or macOS.
        folded[path.lower()] = None if path.lower() in folded else path

    def resolve(reference: str) -> str | None:
        target = _target(reference, html_dir)
        if target is None:
            return None
        path, suffix = target
        found = path if path in files else folded.get(path.lower())
        return None if found is None else base_url + quote(found, safe="/") + suffix

    def replace(match: re.Match[str]) -> str:
        for group, quote_char in (("dq", '"'), ("sq", "'"), ("bare", "")):
            value = match[group]
            if value is not None:
                url = resolve(value)
                if url is None:
                    return match[0]
                return f"{match['head']}{quote_char}{url}{quote_char}"
        return match[0]

    return _CSS_URL.sub(replace, _ATTRIBUTE.sub(replace, html))


def _target(reference: str, html_dir: str) -> tuple[str, str] | None:
    """(path inside the zip, `?query#fragment` to keep) of a relative reference, or None."""
    value = reference.strip()
    if (
        not value
        or value.startswith(("/", "#", "\\"))
        or _SCHEME.match(value)
        or "{{" in value
        or "{%" in value
    ):
        return None
    cut = min((i for i in (value.find("?"), value.find("#")) if i >= 0), default=len(value))
    path = posixpath.normpath(posixpath.join(html_dir, unquote(value[:cut])))
    if path == ".." or path.startswith("../") or path == ".":
        return None
    return path, value[cut:]

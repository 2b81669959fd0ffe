"""Names of an email's per-language fields and of its assets' public URLs.

An email has four kinds of text (subject, HTML, plain text, AMP HTML), each in a
default variant (language "", no suffix in the API) and in ten languages (`_ru` ...).
"""

from __future__ import annotations

from urllib.parse import quote

from envoi.core.languages import LANGUAGES

KINDS: tuple[str, ...] = ("subject", "text_html", "text_plain", "x_amp_html")
VARIANTS: tuple[str, ...] = ("", *LANGUAGES)
DEFAULT_SEGMENT = "default"

# (kind, language), e.g. ("text_html", "ru") for the API's `text_html_ru`.
Slot = tuple[str, str]


def field_name(kind: str, language: str) -> str:
    """`("text_html", "ru")` -> `text_html_ru`; the default variant has no suffix."""
    return f"{kind}_{language}" if language else kind


def slots() -> list[Slot]:
    """Every (kind, language) pair, in the order the API lists the fields."""
    return [(kind, language) for kind in KINDS for language in VARIANTS]


def language_segment(language: str) -> str:
    """The language as it appears in an asset URL: "default" for the default variant."""
    return language or DEFAULT_SEGMENT


def language_of_segment(segment: str) -> str | None:
    """The inverse of `language_segment`; None for anything that names no variant."""
    if segment == DEFAULT_SEGMENT:
        return ""
    return segment if segment in LANGUAGES else None


def assets_base_url(public_url: str, asset_key: str, language: str) -> str:
    """The URL, with a trailing slash, under which one variant's assets are served."""
    return f"{public_url.rstrip('/')}/assets/{asset_key}/{language_segment(language)}/"


def asset_url(public_url: str, asset_key: str, language: str, path: str) -> str:
    return assets_base_url(public_url, asset_key, language) + quote(path, safe="/")

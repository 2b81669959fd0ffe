"""Request and response bodies of `/api/v1/emails`, field for field as in seed 002.

Every field is spelled out (no generated models), so mypy and the OpenAPI page see
them all. The seed's `_zn` spelling is accepted for `_zh` (see StrictModel).
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field, field_validator

from envoi.web.schemas import StrictModel

FROM_ADDRESS_MAX = 320  # Email.from_address
INTERNAL_NAME_MAX = 500  # Email.internal_name


class EmailTexts(BaseModel):
    """Subject, HTML, plain text and AMP HTML: the default variant and each language's.

    Templates are Jinja2, checked on write (syntax, filters, tests); the HTML kinds are
    autoescaped (see envoi.emails.templates)."""

    subject: str | None = None
    subject_ru: str | None = None
    subject_en: str | None = None
    subject_de: str | None = None
    subject_fr: str | None = None
    subject_it: str | None = None
    subject_es: str | None = None
    subject_tr: str | None = None
    subject_pl: str | None = None
    subject_zh: str | None = None
    subject_ko: str | None = None
    text_html: str | None = None
    text_html_ru: str | None = None
    text_html_en: str | None = None
    text_html_de: str | None = None
    text_html_fr: str | None = None
    text_html_it: str | None = None
    text_html_es: str | None = None
    text_html_tr: str | None = None
    text_html_pl: str | None = None
    text_html_zh: str | None = None
    text_html_ko: str | None = None
    text_plain: str | None = None
    text_plain_ru: str | None = None
    text_plain_en: str | None = None
    text_plain_de: str | None = None
    text_plain_fr: str | None = None
    text_plain_it: str | None = None
    text_plain_es: str | None = None
    text_plain_tr: str | None = None
    text_plain_pl: str | None = None
    text_plain_zh: str | None = None
    text_plain_ko: str | None = None
    x_amp_html: str | None = None
    x_amp_html_ru: str | None = None
    x_amp_html_en: str | None = None
    x_amp_html_de: str | None = None
    x_amp_html_fr: str | None = None
    x_amp_html_it: str | None = None
    x_amp_html_es: str | None = None
    x_amp_html_tr: str | None = None
    x_amp_html_pl: str | None = None
    x_amp_html_zh: str | None = None
    x_amp_html_ko: str | None = None


class EmailFiles(BaseModel):
    """Write-only uploads: `data:text/html;base64,...` or `data:application/zip;base64,...`.

    An upload becomes that language's `text_html` (and its zip's files its assets)."""

    file_html: str | None = None
    file_html_ru: str | None = None
    file_html_en: str | None = None
    file_html_de: str | None = None
    file_html_fr: str | None = None
    file_html_it: str | None = None
    file_html_es: str | None = None
    file_html_tr: str | None = None
    file_html_pl: str | None = None
    file_html_zh: str | None = None
    file_html_ko: str | None = None


class EmailIn(StrictModel, EmailFiles, EmailTexts):
    """POST and PUT: the whole email; an absent optional field is empty (or false)."""

    category: int
    from_address: str = Field(max_length=FROM_ADDRESS_MAX)
    internal_name: str | None = Field(default=None, max_length=INTERNAL_NAME_MAX)
    is_urgent: bool = False
    not_add_unsubscr_link: bool = False
    not_add_web_view_link: bool = False
    in_archive: bool = False


class EmailPatch(StrictModel, EmailFiles, EmailTexts):
    """PATCH: only the keys given change; `null` clears an optional text."""

    category: int | None = None
    from_address: str | None = Field(default=None, max_length=FROM_ADDRESS_MAX)
    internal_name: str | None = Field(default=None, max_length=INTERNAL_NAME_MAX)
    is_urgent: bool | None = None
    not_add_unsubscr_link: bool | None = None
    not_add_web_view_link: bool | None = None
    in_archive: bool | None = None

    @field_validator(
        "category",
        "from_address",
        "is_urgent",
        "not_add_unsubscr_link",
        "not_add_web_view_link",
        "in_archive",
    )
    @classmethod
    def _not_null(cls, value: object) -> object:
        # Runs only for keys that were given: absent means "unchanged", null is a mistake.
        if value is None:
            raise ValueError("may not be null")
        return value


class AssetOut(BaseModel):
    """A file of an uploaded zip; `language` is "" for the default variant."""

    language: str
    path: str
    content_type: str
    url: str


class _EmailHeadOut(BaseModel):
    id: int
    project_id: int
    category: int
    from_address: str
    internal_name: str | None


class EmailOut(EmailTexts, _EmailHeadOut):
    """An email as answered: every language key is present, null when unset."""

    is_urgent: bool
    not_add_unsubscr_link: bool
    not_add_web_view_link: bool
    in_archive: bool
    assets: list[AssetOut]
    created_at: datetime
    updated_at: datetime

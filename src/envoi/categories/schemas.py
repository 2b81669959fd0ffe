"""Request and response bodies of `/api/v1/categories`, field for field as in seed 002."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from envoi.core.languages import LANGUAGES
from envoi.web.schemas import StrictModel

TRANSLATED = ("title", "description")


class CategoryIn(StrictModel):
    """A category; the seed's `title_zn` / `description_zn` are accepted for `_zh`."""

    title: str = Field(min_length=1, max_length=500)
    description: str | None = None
    title_ru: str | None = None
    description_ru: str | None = None
    title_en: str | None = None
    description_en: str | None = None
    title_de: str | None = None
    description_de: str | None = None
    title_fr: str | None = None
    description_fr: str | None = None
    title_it: str | None = None
    description_it: str | None = None
    title_es: str | None = None
    description_es: str | None = None
    title_tr: str | None = None
    description_tr: str | None = None
    title_pl: str | None = None
    description_pl: str | None = None
    title_zh: str | None = None
    description_zh: str | None = None
    title_ko: str | None = None
    description_ko: str | None = None


class CategoryOut(BaseModel):
    """`category` is the id, as in the seed's examples; every language key is present."""

    model_config = ConfigDict(extra="allow")

    category: int
    project_id: int
    title: str
    description: str | None


def translated_keys() -> list[str]:
    return [f"{base}_{lang}" for lang in LANGUAGES for base in TRANSLATED]


def translations_of(body: CategoryIn) -> dict[str, str]:
    data: dict[str, Any] = body.model_dump()
    return {key: data[key] for key in translated_keys() if data.get(key) is not None}

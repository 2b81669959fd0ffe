"""Subscription categories (seed 002 "categories"), with titles in ten languages."""

from __future__ import annotations

from sqlalchemy import String, Text
from sqlalchemy.orm import Mapped, mapped_column

from envoi.db.base import Base, JSONType, created_at, intpk, project_fk, updated_at


class Category(Base):
    __tablename__ = "categories"

    id: Mapped[intpk]
    project_id: Mapped[project_fk]
    title: Mapped[str] = mapped_column(String(500))
    description: Mapped[str | None] = mapped_column(Text)
    # {"title_ru": "...", "description_de": "..."}: only the languages that are set.
    translations: Mapped[dict[str, str]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]

    def __repr__(self) -> str:
        return f"<Category {self.id} {self.title!r}>"


__all__ = ["Category"]

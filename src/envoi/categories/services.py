"""Rules for categories: scoped to one project, never deleted while an email uses them."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from envoi.categories.models import Category
from envoi.core.errors import Conflict
from envoi.db.lookup import get_owned
from envoi.emails.models import Email


def list_categories(session: Session, project_id: int) -> list[Category]:
    query = select(Category).where(Category.project_id == project_id).order_by(Category.id)
    return list(session.scalars(query))


def get_category(session: Session, project_id: int, category_id: int) -> Category:
    return get_owned(session, Category, project_id, category_id, "category")


def create_category(
    session: Session,
    project_id: int,
    *,
    title: str,
    description: str | None,
    translations: dict[str, str],
) -> Category:
    category = Category(
        project_id=project_id, title=title, description=description, translations=translations
    )
    session.add(category)
    session.flush()
    return category


def rewrite_category(
    session: Session,
    project_id: int,
    category_id: int,
    *,
    title: str,
    description: str | None,
    translations: dict[str, str],
) -> Category:
    category = get_category(session, project_id, category_id)
    category.title = title
    category.description = description
    category.translations = translations
    session.flush()
    return category


def delete_category(session: Session, project_id: int, category_id: int) -> None:
    category = get_category(session, project_id, category_id)
    used_by = session.scalar(select(Email.id).where(Email.category_id == category_id).limit(1))
    if used_by is not None:
        raise Conflict(f"category {category_id} is used by email {used_by}")
    session.delete(category)

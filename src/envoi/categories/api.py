"""`/api/v1/categories`: list, create, get, rewrite, delete."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response, status

from envoi.categories import services
from envoi.categories.models import Category
from envoi.categories.schemas import CategoryIn, CategoryOut, translated_keys, translations_of
from envoi.web.deps import CurrentProject, Db

router = APIRouter(prefix="/categories", tags=["categories"])


def _out(category: Category) -> dict[str, Any]:
    body: dict[str, Any] = {
        "category": category.id,
        "project_id": category.project_id,
        "title": category.title,
        "description": category.description,
    }
    for key in translated_keys():
        body[key] = category.translations.get(key)
    return body


@router.get("", response_model=list[CategoryOut])
def list_categories(project: CurrentProject, db: Db) -> list[dict[str, Any]]:
    return [_out(c) for c in services.list_categories(db, project.id)]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=CategoryOut)
def create_category(body: CategoryIn, project: CurrentProject, db: Db) -> dict[str, Any]:
    category = services.create_category(
        db,
        project.id,
        title=body.title,
        description=body.description,
        translations=translations_of(body),
    )
    db.commit()
    return _out(category)


@router.get("/{category_id}", response_model=CategoryOut)
def get_category(category_id: int, project: CurrentProject, db: Db) -> dict[str, Any]:
    return _out(services.get_category(db, project.id, category_id))


@router.put("/{category_id}", response_model=CategoryOut)
def rewrite_category(
    category_id: int, body: CategoryIn, project: CurrentProject, db: Db
) -> dict[str, Any]:
    category = services.rewrite_category(
        db,
        project.id,
        category_id,
        title=body.title,
        description=body.description,
        translations=translations_of(body),
    )
    db.commit()
    return _out(category)


@router.delete("/{category_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_category(category_id: int, project: CurrentProject, db: Db) -> Response:
    services.delete_category(db, project.id, category_id)
    db.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)

"""`/api/v1/emails` (list, create, get, rewrite, edit) and the public URLs of the files
of uploaded zips (`/assets/{asset_key}/{language}/{path}`), which need no credentials:
recipients' mail clients fetch them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status

from envoi.core.errors import NotFound
from envoi.db.lookup import DB_INT_MAX
from envoi.emails import services
from envoi.emails.models import Email
from envoi.emails.schemas import EmailIn, EmailOut, EmailPatch
from envoi.emails.services import EmailHead
from envoi.emails.variants import (
    VARIANTS,
    Slot,
    asset_url,
    field_name,
    language_of_segment,
    slots,
)
from envoi.web.deps import AppSettings, CurrentProject, Db

router = APIRouter(prefix="/emails", tags=["emails"])
assets_router = APIRouter(tags=["assets"])

# A week: long enough for mail clients and image proxies, short enough that a re-uploaded
# zip (same paths, new bytes) shows everywhere soon.
ASSET_CACHE_CONTROL = "public, max-age=604800"
# Assets are strangers' files served from envoi's own origin: never let one run a script.
ASSET_SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; img-src * data:; style-src * 'unsafe-inline'; "
    "font-src * data:; sandbox",
}
# API key -> EmailHead attribute.
HEAD_KEYS = {
    "category": "category_id",
    "from_address": "from_address",
    "internal_name": "internal_name",
    "is_urgent": "is_urgent",
    "not_add_unsubscr_link": "not_add_unsubscr_link",
    "not_add_web_view_link": "not_add_web_view_link",
    "in_archive": "in_archive",
}


def _out(email: Email, public_url: str) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": email.id,
        "project_id": email.project_id,
        "category": email.category_id,
        "from_address": email.from_address,
        "internal_name": email.internal_name,
    }
    contents = {content.language: content for content in email.contents}
    for kind, language in slots():
        content = contents.get(language)
        body[field_name(kind, language)] = None if content is None else getattr(content, kind)
    order = {language: i for i, language in enumerate(VARIANTS)}
    assets = sorted(email.assets, key=lambda a: (order.get(a.language, len(order)), a.path))
    body |= {
        "is_urgent": email.is_urgent,
        "not_add_unsubscr_link": email.not_add_unsubscr_link,
        "not_add_web_view_link": email.not_add_web_view_link,
        "in_archive": email.in_archive,
        "assets": [
            {
                "language": asset.language,
                "path": asset.path,
                "content_type": asset.content_type,
                "url": asset_url(public_url, email.asset_key, asset.language, asset.path),
            }
            for asset in assets
        ],
        "created_at": email.created_at,
        "updated_at": email.updated_at,
    }
    return body


def _head(body: EmailIn) -> EmailHead:
    return EmailHead(
        category_id=body.category,
        from_address=body.from_address,
        internal_name=body.internal_name,
        is_urgent=body.is_urgent,
        not_add_unsubscr_link=body.not_add_unsubscr_link,
        not_add_web_view_link=body.not_add_web_view_link,
        in_archive=body.in_archive,
    )


def _texts(values: Mapping[str, Any]) -> dict[Slot, str | None]:
    """The texts among `values` (a request body's keys), by (kind, language)."""
    return {slot: values[name] for slot in slots() if (name := field_name(*slot)) in values}


def _files(values: Mapping[str, Any]) -> dict[str, str]:
    """The `file_html*` uploads among `values`, by language; null is no upload."""
    named = {language: values.get(field_name("file_html", language)) for language in VARIANTS}
    return {language: data_url for language, data_url in named.items() if data_url is not None}


@router.get("", response_model=list[EmailOut])
def list_emails(
    *,
    project: CurrentProject,
    db: Db,
    settings: AppSettings,
    in_archive: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=services.LIST_LIMIT_MAX)] = services.LIST_LIMIT_MAX,
    after: Annotated[int | None, Query(ge=0, le=DB_INT_MAX)] = None,
) -> list[dict[str, Any]]:
    """The project's emails, oldest (lowest id) first; `?in_archive=true|false` filters.
    At most `limit` of them (1000 by default): when a page is full, ask for the next
    one with `after` = the last id."""
    emails = services.list_emails(db, project.id, in_archive=in_archive, limit=limit, after=after)
    return [_out(email, settings.public_url) for email in emails]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=EmailOut)
def create_email(
    body: EmailIn, project: CurrentProject, db: Db, settings: AppSettings
) -> dict[str, Any]:
    values = body.model_dump()
    email = services.create_email(
        db, project.id, _head(body), _texts(values), _files(values), public_url=settings.public_url
    )
    db.commit()
    return _out(email, settings.public_url)


@router.get("/{email_id}", response_model=EmailOut)
def get_email(
    email_id: int, project: CurrentProject, db: Db, settings: AppSettings
) -> dict[str, Any]:
    return _out(services.get_email(db, project.id, email_id), settings.public_url)


@router.put("/{email_id}", response_model=EmailOut)
def rewrite_email(
    email_id: int, body: EmailIn, project: CurrentProject, db: Db, settings: AppSettings
) -> dict[str, Any]:
    """The whole email is replaced: an absent text is cleared, an absent flag is false."""
    email = services.get_email(db, project.id, email_id)
    values = body.model_dump()
    services.write_email(
        db, email, _head(body), _texts(values), _files(values), public_url=settings.public_url
    )
    db.commit()
    return _out(email, settings.public_url)


@router.patch("/{email_id}", response_model=EmailOut)
def edit_email(
    email_id: int, body: EmailPatch, project: CurrentProject, db: Db, settings: AppSettings
) -> dict[str, Any]:
    """Only the keys given change."""
    email = services.get_email(db, project.id, email_id)
    given = body.model_dump(exclude_unset=True)
    head = replace(
        services.head_of(email), **{HEAD_KEYS[k]: v for k, v in given.items() if k in HEAD_KEYS}
    )
    services.write_email(
        db, email, head, _texts(given), _files(given), public_url=settings.public_url
    )
    db.commit()
    return _out(email, settings.public_url)


@assets_router.get("/assets/{asset_key}/{language}/{path:path}")
def get_asset(asset_key: str, language: str, path: str, db: Db) -> Response:
    """One file of an uploaded zip, e.g. `/assets/<key>/default/images/logo.png`."""
    variant = language_of_segment(language)
    if variant is None:
        raise NotFound("asset not found")
    asset = services.get_asset(db, asset_key, variant, path)
    headers = {"Cache-Control": ASSET_CACHE_CONTROL, **ASSET_SECURITY_HEADERS}
    return Response(content=asset.data, media_type=asset.content_type, headers=headers)

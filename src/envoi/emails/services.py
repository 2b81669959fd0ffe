"""Rules for emails: scoped to one project, checked whole before anything is written.

A write gives the email's head (category, sender, flags), the texts that change, keyed
by (kind, language), and `file_html` uploads by language. An upload becomes that
language's `text_html`, its zip's files replace that language's assets, and its
relative references are pointed at the assets' public URLs. A language left with no
HTML (neither `text_html` nor `x_amp_html`) loses its assets.
"""

from __future__ import annotations

import mimetypes
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.orm.interfaces import LoaderOption

from envoi.categories.models import Category
from envoi.core.addresses import AddressError, check_sender
from envoi.core.errors import Invalid, NotFound
from envoi.db.base import utcnow
from envoi.db.lookup import get_owned
from envoi.emails.htmlfiles import decode_html, rewrite_references
from envoi.emails.models import Email, EmailAsset, EmailContent
from envoi.emails.templates import make_environment, template_error
from envoi.emails.uploads import UploadError, read_upload
from envoi.emails.variants import KINDS, VARIANTS, Slot, assets_base_url, field_name

CONTENT_TYPE_MAX = 100  # EmailAsset.content_type
# An email answers every text of every language, so a list is bounded: by default it
# holds this many (every email of nearly any project, as the seed expects), at most too.
LIST_LIMIT_MAX = 1000


@dataclass(frozen=True)
class EmailHead:
    """Everything of an email but its texts and assets."""

    category_id: int
    from_address: str
    internal_name: str | None = None
    is_urgent: bool = False
    not_add_unsubscr_link: bool = False
    not_add_web_view_link: bool = False
    in_archive: bool = False


@dataclass(frozen=True)
class _Plan:
    """A checked write: the texts that change and the languages whose assets are replaced."""

    texts: dict[Slot, str | None]
    assets: dict[str, dict[str, bytes]]


def _load_options() -> tuple[LoaderOption, ...]:
    # Texts and asset names come with the email; asset bytes only when an asset is served.
    return (selectinload(Email.contents), selectinload(Email.assets).defer(EmailAsset.data))


def list_emails(
    session: Session,
    project_id: int,
    *,
    in_archive: bool | None = None,
    limit: int = LIST_LIMIT_MAX,
    after: int | None = None,
) -> list[Email]:
    """At most `limit` emails with an id above `after`, lowest id first."""
    query = select(Email).where(Email.project_id == project_id)
    if in_archive is not None:
        query = query.where(Email.in_archive == in_archive)
    if after is not None:
        query = query.where(Email.id > after)
    query = query.options(*_load_options()).order_by(Email.id).limit(limit)
    return list(session.scalars(query))


def get_email(session: Session, project_id: int, email_id: int) -> Email:
    return get_owned(session, Email, project_id, email_id, "email", options=_load_options())


def head_of(email: Email) -> EmailHead:
    return EmailHead(
        category_id=email.category_id,
        from_address=email.from_address,
        internal_name=email.internal_name,
        is_urgent=email.is_urgent,
        not_add_unsubscr_link=email.not_add_unsubscr_link,
        not_add_web_view_link=email.not_add_web_view_link,
        in_archive=email.in_archive,
    )


def create_email(
    session: Session,
    project_id: int,
    head: EmailHead,
    texts: Mapping[Slot, str | None],
    files: Mapping[str, str],
    *,
    public_url: str,
) -> Email:
    email = Email(project_id=project_id, asset_key=secrets.token_urlsafe(24))
    # Checked before the email joins the session: a refused create leaves no trace.
    _write(session, email, head, texts, files, public_url=public_url)
    email.created_at = email.updated_at
    session.add(email)
    session.flush()
    return email


def write_email(
    session: Session,
    email: Email,
    head: EmailHead,
    texts: Mapping[Slot, str | None],
    files: Mapping[str, str],
    *,
    public_url: str,
) -> Email:
    """Change `email`: a rewrite gives every slot in `texts`, an edit only those that change."""
    _write(session, email, head, texts, files, public_url=public_url)
    session.flush()
    return email


def _write(
    session: Session,
    email: Email,
    head: EmailHead,
    texts: Mapping[Slot, str | None],
    files: Mapping[str, str],
    *,
    public_url: str,
) -> None:
    plan = _plan(
        session,
        email.project_id,
        email.asset_key,
        head=head,
        texts=texts,
        files=files,
        public_url=public_url,
    )
    _apply(session, email, head, plan)


def get_asset(session: Session, asset_key: str, language: str, path: str) -> EmailAsset:
    """An asset by its public URL's parts; no project is needed, the key is the secret."""
    query = (
        select(EmailAsset)
        .join(Email, EmailAsset.email_id == Email.id)
        .where(Email.asset_key == asset_key, EmailAsset.language == language)
        .where(EmailAsset.path == path)
    )
    asset = session.scalars(query).first()
    if asset is None:
        raise NotFound("asset not found")
    return asset


def _plan(
    session: Session,
    project_id: int,
    asset_key: str,
    *,
    head: EmailHead,
    texts: Mapping[Slot, str | None],
    files: Mapping[str, str],
    public_url: str,
) -> _Plan:
    """Check every value of a write and decode its uploads; raise Invalid, naming the field,
    at the first bad one. Nothing is changed here, so a refused write leaves no trace."""
    try:
        get_owned(session, Category, project_id, head.category_id, "category")
    except NotFound as exc:
        raise Invalid(exc.message, loc=("body", "category")) from None
    try:
        check_sender(head.from_address)
    except AddressError as exc:
        raise Invalid(f"invalid from address: {exc}", loc=("body", "from_address")) from None
    _check_text("internal_name", head.internal_name)

    changed: dict[Slot, str | None] = dict(texts)
    blame = {slot: field_name(*slot) for slot in texts}
    assets: dict[str, dict[str, bytes]] = {}
    for language, data_url in files.items():
        name = field_name("file_html", language)
        if texts.get(("text_html", language)) is not None:
            message = f"give either {field_name('text_html', language)} or {name}, not both"
            raise Invalid(message, loc=("body", name))
        try:
            upload = read_upload(data_url)
        except UploadError as exc:
            raise Invalid(str(exc), loc=("body", name)) from None
        html = decode_html(upload.html, upload.charset)
        base_url = assets_base_url(public_url, asset_key, language)
        changed["text_html", language] = rewrite_references(
            html, upload.html_dir, upload.files.keys(), base_url
        )
        blame["text_html", language] = name
        assets[language] = upload.files

    environments = {kind: make_environment(kind) for kind in KINDS}
    for (kind, language), text in changed.items():
        name = blame[kind, language]
        _check_text(name, text)
        problem = None if text is None else template_error(text, environments[kind])
        if problem is not None:
            raise Invalid(problem, loc=("body", name))
    return _Plan(texts=changed, assets=assets)


def _check_text(name: str, text: str | None) -> None:
    # PostgreSQL cannot store NUL in text; refuse it on both backends alike.
    if text is not None and "\x00" in text:
        raise Invalid("must not contain NUL characters", loc=("body", name))


def _apply(session: Session, email: Email, head: EmailHead, plan: _Plan) -> None:
    email.category_id = head.category_id
    email.from_address = check_sender(head.from_address)
    email.internal_name = head.internal_name
    email.is_urgent = head.is_urgent
    email.not_add_unsubscr_link = head.not_add_unsubscr_link
    email.not_add_web_view_link = head.not_add_web_view_link
    email.in_archive = head.in_archive
    # The texts live in other rows; the email still counts as updated.
    email.updated_at = utcnow()
    _apply_texts(email, plan.texts)
    _apply_assets(session, email, plan.assets)


def _apply_texts(email: Email, texts: Mapping[Slot, str | None]) -> None:
    by_language = {content.language: content for content in email.contents}
    for language in VARIANTS:
        changes = {kind: texts[kind, language] for kind in KINDS if (kind, language) in texts}
        if not changes:
            continue
        content = by_language.get(language)
        if content is None:
            content = EmailContent(language=language)
            email.contents.append(content)
        for kind, text in changes.items():
            setattr(content, kind, text)
        if all(getattr(content, kind) is None for kind in KINDS):
            email.contents.remove(content)  # an empty variant is no variant


def _apply_assets(session: Session, email: Email, uploads: Mapping[str, dict[str, bytes]]) -> None:
    with_html = {
        content.language
        for content in email.contents
        if content.text_html is not None or content.x_amp_html is not None
    }
    stale = [a for a in email.assets if a.language in uploads or a.language not in with_html]
    if stale:
        for asset in stale:
            email.assets.remove(asset)
        # Delete before inserting: a new file may have an old one's (language, path).
        session.flush()
    for language, files in uploads.items():
        for path, data in sorted(files.items()):
            email.assets.append(
                EmailAsset(
                    language=language, path=path, content_type=_content_type(path), data=data
                )
            )


def _content_type(path: str) -> str:
    guessed, _ = mimetypes.guess_type(path, strict=False)
    if guessed is None or len(guessed) > CONTENT_TYPE_MAX:
        return "application/octet-stream"
    return guessed

"""The emails single sends use when they name none: inline content, and test copies.

The delivery worker and the tracking endpoints compile an email by id (`delivery.
services.compile_for`), so inline content (`from_address`, `subject`, `text_html`,
`text_plain` in the request) becomes an Email row: one per distinct content, found
again by its SHA-256 (`send_registry` key `content:<hash>`), so a million password
resets with the same template are one email. Such an email is transactional
(`is_urgent`: the marketing checks do not apply and a hard bounce quarantines
nothing), adds no footer links (the request's HTML is the whole message), is
archived, and belongs to the request's `category` or else to the project's
"Transactional" category, made at first use.

A test send mails a copy of the tested campaign's email (`copy_for_tests`): the same
texts, sender and footer flags, but transactional, so that a test never quarantines
an address (a bounce, a complaint) and passes the marketing checks a tester's own
address may fail. A copy is made once per content of the email, like inline content.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace

from sqlalchemy.orm import Session

from envoi.categories.models import Category
from envoi.emails.models import Email, EmailContent
from envoi.emails.services import EmailHead, create_email
from envoi.emails.variants import KINDS, Slot
from envoi.sends.streams import registered

CATEGORY_KEY = "category"
CATEGORY_TITLE = "Transactional"
CATEGORY_DESCRIPTION = "Messages sent one at a time through POST /api/v1/send"


@dataclass(frozen=True)
class InlineContent:
    """A message given whole in a send request (the default variant only)."""

    from_address: str
    subject: str | None
    text_html: str | None
    text_plain: str | None
    category_id: int | None = None


def inline_email(
    session: Session, project_id: int, content: InlineContent, *, public_url: str
) -> Email:
    """The email of `content`, made (and its templates and category checked) at its
    first send; Invalid, at the request's field, when they are wrong. Found again by
    its content alone: the project's category is looked up only to make one."""
    texts: dict[Slot, str | None] = {
        ("subject", ""): content.subject,
        ("text_html", ""): content.text_html,
        ("text_plain", ""): content.text_plain,
    }
    head = EmailHead(
        category_id=0,  # the request's, or the project's "Transactional": see `make`
        from_address=content.from_address,
        is_urgent=True,
        not_add_unsubscr_link=True,
        not_add_web_view_link=True,
        in_archive=True,
    )
    digest = _digest("inline", asdict(head) | {"category_id": content.category_id}, texts)

    def make() -> int:
        category_id = content.category_id or transactional_category(session, project_id)
        named = replace(head, category_id=category_id, internal_name=f"API send {digest[:12]}")
        return create_email(session, project_id, named, texts, {}, public_url=public_url).id

    return _email(session, project_id, f"content:{digest}", make)


def copy_for_tests(session: Session, email: Email) -> Email:
    """A transactional copy of `email` as it is now (made once per content)."""
    texts = {
        (kind, content.language): getattr(content, kind)
        for content in email.contents
        for kind in KINDS
    }
    flags = {
        "of": email.id,
        "category_id": email.category_id,
        "from_address": email.from_address,
        "not_add_unsubscr_link": email.not_add_unsubscr_link,
        "not_add_web_view_link": email.not_add_web_view_link,
    }
    digest = _digest("test", flags, texts)

    def make() -> int:
        copy = Email(
            project_id=email.project_id,
            category_id=email.category_id,
            from_address=email.from_address,
            internal_name=f"test copy of email {email.id}",
            is_urgent=True,
            not_add_unsubscr_link=email.not_add_unsubscr_link,
            not_add_web_view_link=email.not_add_web_view_link,
            in_archive=True,
            # Its HTML names the original's assets by their public URLs.
            asset_key=secrets.token_urlsafe(24),
            contents=[
                EmailContent(
                    language=content.language,
                    subject=content.subject,
                    text_html=content.text_html,
                    text_plain=content.text_plain,
                    x_amp_html=content.x_amp_html,
                )
                for content in email.contents
            ],
        )
        session.add(copy)
        session.flush()
        return copy.id

    return _email(session, email.project_id, f"content:{digest}", make)


def transactional_category(session: Session, project_id: int) -> int:
    """The project's category of inline content, made at first use (and again if the
    project deleted it)."""

    def make() -> int:
        category = Category(
            project_id=project_id, title=CATEGORY_TITLE, description=CATEGORY_DESCRIPTION
        )
        session.add(category)
        session.flush()
        return category.id

    def usable(row_id: int) -> bool:
        return session.get(Category, row_id) is not None

    return registered(session, project_id, CATEGORY_KEY, make, usable)


def _email(session: Session, project_id: int, key: str, make: Callable[[], int]) -> Email:
    def usable(row_id: int) -> bool:
        return session.get(Email, row_id) is not None

    email = session.get(Email, registered(session, project_id, key, make, usable))
    if email is None:  # made or checked just above, in this transaction
        raise RuntimeError(f"email {key} vanished")
    return email


def _digest(kind: str, head: Mapping[str, object], texts: Mapping[Slot, str | None]) -> str:
    """SHA-256 of everything that makes the email what it is."""
    document = {
        "kind": kind,
        "head": dict(head),
        "texts": sorted([*slot, text] for slot, text in texts.items() if text is not None),
    }
    return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()

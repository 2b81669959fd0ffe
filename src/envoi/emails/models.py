"""Emails (seed 002 "messages"): a template per language, plus the images of uploaded zips."""

from __future__ import annotations

from sqlalchemy import Boolean, ForeignKey, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from envoi.db.base import Base, created_at, intpk, project_fk, updated_at


class Email(Base):
    __tablename__ = "emails"

    id: Mapped[intpk]
    project_id: Mapped[project_fk]
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id"), index=True)
    from_address: Mapped[str] = mapped_column(String(320))
    internal_name: Mapped[str | None] = mapped_column(String(500))
    is_urgent: Mapped[bool] = mapped_column(Boolean, default=False)
    not_add_unsubscr_link: Mapped[bool] = mapped_column(Boolean, default=False)
    not_add_web_view_link: Mapped[bool] = mapped_column(Boolean, default=False)
    in_archive: Mapped[bool] = mapped_column(Boolean, default=False)
    # Random, unguessable prefix of the public URLs of this email's images.
    asset_key: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[created_at]
    updated_at: Mapped[updated_at]

    contents: Mapped[list[EmailContent]] = relationship(
        back_populates="email", cascade="all, delete-orphan", order_by="EmailContent.language"
    )
    assets: Mapped[list[EmailAsset]] = relationship(
        back_populates="email", cascade="all, delete-orphan", order_by="EmailAsset.path"
    )


class EmailContent(Base):
    """One language variant; language "" is the default variant (no suffix in the API)."""

    __tablename__ = "email_contents"
    __table_args__ = (UniqueConstraint("email_id", "language"),)

    id: Mapped[intpk]
    email_id: Mapped[int] = mapped_column(ForeignKey("emails.id", ondelete="CASCADE"), index=True)
    language: Mapped[str] = mapped_column(String(8))
    subject: Mapped[str | None] = mapped_column(Text)
    text_html: Mapped[str | None] = mapped_column(Text)
    text_plain: Mapped[str | None] = mapped_column(Text)
    x_amp_html: Mapped[str | None] = mapped_column(Text)

    email: Mapped[Email] = relationship(back_populates="contents")


class EmailAsset(Base):
    """A file from an uploaded zip (an image, a stylesheet), served publicly."""

    __tablename__ = "email_assets"
    __table_args__ = (UniqueConstraint("email_id", "language", "path"),)

    id: Mapped[intpk]
    email_id: Mapped[int] = mapped_column(ForeignKey("emails.id", ondelete="CASCADE"), index=True)
    language: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(500))
    content_type: Mapped[str] = mapped_column(String(100))
    data: Mapped[bytes] = mapped_column(LargeBinary)

    email: Mapped[Email] = relationship(back_populates="assets")

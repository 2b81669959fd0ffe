"""Alembic environment: runs migrations against the URL given by envoi.db.session."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from envoi.db.models import Base
from envoi.db.session import make_engine

config = context.config
target_metadata = Base.metadata


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None  # noqa: S101 - set by envoi.db.session.alembic_config
    engine = make_engine(url)
    with engine.connect() as connection:
        run_migrations(connection)
    engine.dispose()


run_online()

"""What the `envoi` sub-commands of the domain packages share: one transaction on the
migrated store, and a domain error ending the command as `error: ...` on stderr.

Imports are made when a command runs (see `envoi.cli`): every `envoi` command imports
the modules that register sub-commands.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer

from envoi.core.errors import EnvoiError, Invalid

if TYPE_CHECKING:
    from sqlalchemy.orm import Session


@contextmanager
def command_session() -> Iterator[Session]:
    """One transaction on the configured database, migrated first; errors a person
    caused end the command with exit code 1."""
    from envoi.config import Settings  # noqa: PLC0415 - see the module docstring
    from envoi.db.session import make_engine, make_sessionmaker, transaction, upgrade  # noqa: PLC0415

    settings = Settings()
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            yield session
    except EnvoiError as exc:
        raise fail(described(exc)) from None
    finally:
        engine.dispose()


def described(exc: EnvoiError) -> str:
    """The error's message, prefixed by the field it is about when there is one."""
    if isinstance(exc, Invalid):
        where = ".".join(str(part) for part in exc.loc if part != "body")
        if where:
            return f"{where}: {exc.message}"
    return exc.message


def fail(message: str) -> typer.Exit:
    """Print `error: message` on stderr; the exit (code 1) to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code=1)

"""`envoi events status | rebuild | import FILE`: the event store from the command line.

The store is the DuckDB file of ENVOI_EVENTS_URL, which one process may write at a
time: while `envoi serve` runs (its projector holds it), these commands stop with an
error saying so. Imports are made when a command runs (see `envoi.cli`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from envoi.commands import fail

if TYPE_CHECKING:
    from rich.progress import Progress
    from sqlalchemy.engine import Engine

    from envoi.config import Settings
    from envoi.eventstore.duckdb import DuckDBStore

events_app = typer.Typer(help="The event store the statistics read (docs/events.md).")


@contextmanager
def _opened() -> Iterator[tuple[Settings, Engine, DuckDBStore]]:
    """The settings, the migrated OLTP store's engine and the event store."""
    from envoi.config import Settings  # noqa: PLC0415 - see the module docstring
    from envoi.core.errors import EnvoiError  # noqa: PLC0415
    from envoi.db.session import make_engine, upgrade  # noqa: PLC0415
    from envoi.eventstore.duckdb import open_store  # noqa: PLC0415
    from envoi.eventstore.providers import ProviderDirectory  # noqa: PLC0415

    settings = Settings()
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    providers = ProviderDirectory.from_settings(settings)
    try:
        try:
            store = open_store(settings.events_store_url, providers)
        except EnvoiError as exc:
            raise fail(exc.message) from None
        try:
            yield settings, engine, store
        except EnvoiError as exc:
            raise fail(exc.message) from None
        finally:
            store.close()
    finally:
        providers.close()
        engine.dispose()


def _progress() -> Progress:
    from rich.console import Console  # noqa: PLC0415
    from rich.progress import (  # noqa: PLC0415
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )


@events_app.command("status")
def status_command() -> None:
    """Where the projector is, as JSON.

    cursor (the last outbox id in the store), outbox_max_id, pending (outbox rows
    beyond the cursor), lag_seconds (age of the oldest of them), events (rows in the
    store), imported (of which imported).
    """
    from envoi.eventstore.reading import OutboxReader  # noqa: PLC0415
    from envoi.eventstore.schema import IMPORT_ID_BASE  # noqa: PLC0415

    with _opened() as (settings, engine, store):
        reader = OutboxReader(engine)
        cursor = store.cursor()
        newest = reader.newest()
        oldest = reader.oldest_after(cursor)
        counts = store.query(
            f"SELECT count(*), count(*) FILTER (WHERE id >= {IMPORT_ID_BASE}) FROM events"  # noqa: S608
        )[1][0]
    lag = 0.0
    if oldest is not None:
        from envoi.eventstore.mapping import naive_utc  # noqa: PLC0415

        waiting = naive_utc(oldest)
        now = datetime.now(UTC).replace(tzinfo=None)
        lag = max(0.0, (now - waiting).total_seconds()) if waiting else 0.0
    outbox_max = newest[0] if newest else 0
    typer.echo(
        json.dumps(
            {
                "store": settings.events_store_url,
                "cursor": cursor,
                "outbox_max_id": outbox_max,
                "pending": max(0, outbox_max - cursor),
                "lag_seconds": round(lag, 3),
                "events": counts[0],
                "imported": counts[1],
            },
            indent=2,
        )
    )


@events_app.command("rebuild")
def rebuild_command() -> None:
    """Project the whole outbox again (imported events stay).

    The events projected from the outbox are dropped first. Interrupted, the projection
    goes on from where it stopped the next time the projector runs (`envoi serve`).
    """
    from envoi.db.session import make_sessionmaker  # noqa: PLC0415
    from envoi.eventstore.projector import Projector  # noqa: PLC0415

    with _opened() as (_settings, engine, store):
        projector = Projector(make_sessionmaker(engine), store)
        newest = projector.reader.newest()
        store.reset()
        with _progress() as progress:
            task = progress.add_task("projecting the outbox", total=newest[0] if newest else 0)
            projected = projector.run_until_idle(
                on_batch=lambda cursor: progress.update(task, completed=cursor)
            )
            progress.update(task, completed=store.cursor())
        cursor = store.cursor()
    typer.echo(json.dumps({"events": projected, "cursor": cursor}, indent=2))


@events_app.command("import")
def import_command(
    file: Annotated[
        Path, typer.Argument(help="JSON lines (.jsonl, .ndjson, .json) or Parquet (.parquet)")
    ],
    file_format: Annotated[
        str | None,
        typer.Option("--format", help="jsonl or parquet (default: from the file's extension)"),
    ] = None,
) -> None:
    """Load historical events from FILE (docs/events.md).

    One object per event. The whole file is checked first: a bad line stops the import
    with its number, and nothing is loaded.
    """
    from sqlalchemy import select  # noqa: PLC0415
    from sqlalchemy.orm import Session  # noqa: PLC0415

    from envoi.eventstore import imports  # noqa: PLC0415
    from envoi.profiles.models import Erasure  # noqa: PLC0415
    from envoi.projects.models import Project  # noqa: PLC0415

    chosen = file_format or ("parquet" if file.suffix.lower() == ".parquet" else "jsonl")
    if chosen not in ("jsonl", "parquet"):
        raise fail(f"--format must be jsonl or parquet, not {chosen!r}")
    if not file.is_file():
        raise fail(f"{file}: no such file")
    with _opened() as (_settings, engine, store):
        with Session(engine) as session:
            projects = set(session.scalars(select(Project.id)))
            # GDPR: events naming a person erased (and not registered again) lose
            # their recipient and profile as they are loaded.
            erased = session.execute(select(Erasure.project_id, Erasure.identifier_hash))
            erasures = imports.erasures_of((project_id, digest) for project_id, digest in erased)
        with _progress() as progress:
            if chosen == "parquet":
                checked = imports.check_parquet(store, file, projects)
            else:
                task = progress.add_task("checking", total=file.stat().st_size)
                checked = imports.check_jsonl(
                    file, projects, lambda done: progress.advance(task, done)
                )
            try:
                task = progress.add_task("loading", total=checked.rows)
                added = imports.load(
                    store, checked, lambda done: progress.advance(task, done), erasures
                )
            finally:
                checked.close()
    typer.echo(json.dumps({"file": str(file), "events": added}, indent=2))

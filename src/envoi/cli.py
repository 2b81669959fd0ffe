"""The `envoi` command: serve, migrate, and manage projects.

Each command imports what it needs when it runs: importing the web application (FastAPI,
every schema) took about two seconds of CPU, which `envoi worker` and short commands
like `envoi project list` should not pay. Keep the imports at the top of this module
and of the sub-command modules (`delivery.cli`, `routers.cli`) light.
"""

from __future__ import annotations

import json
import logging
from contextlib import ExitStack
from typing import TYPE_CHECKING, Annotated

import typer

from envoi.commands import fail
from envoi.core.errors import EnvoiError
from envoi.delivery.cli import dkim_app, worker_command
from envoi.eventstore.cli import events_app
from envoi.inbound.cli import bounce_app
from envoi.routers.cli import captured_command, router_app

if TYPE_CHECKING:
    from envoi.config import Settings

app = typer.Typer(help="envoi: self-hosted email campaigns with a first-class statistics engine.")
db_app = typer.Typer(help="The OLTP store.")
project_app = typer.Typer(help="Projects (tenants) and their API credentials.")
app.add_typer(db_app, name="db")
app.add_typer(project_app, name="project")
app.add_typer(router_app, name="router")
app.add_typer(dkim_app, name="dkim")
app.add_typer(bounce_app, name="bounce")
app.add_typer(events_app, name="events")
app.command("captured")(captured_command)
app.command("worker")(worker_command)


def _settings() -> Settings:
    from envoi.config import Settings  # noqa: PLC0415 - see the module docstring

    return Settings()


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url  # noqa: PLC0415

    return make_url(url).render_as_string(hide_password=True)


def _print(data: object) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


@app.command()
def serve() -> None:
    """Apply migrations, then serve every HTTP surface on ENVOI_HTTP_LISTEN, take
    bounces and complaints over SMTP on ENVOI_SMTP_LISTEN and, when set, mail to send
    on ENVOI_SUBMISSION_LISTEN."""
    import uvicorn  # noqa: PLC0415 - see the module docstring

    from envoi.db.session import make_engine, make_sessionmaker, upgrade  # noqa: PLC0415
    from envoi.inbound.listener import FeedbackListener  # noqa: PLC0415
    from envoi.sends.submission import SubmissionListener  # noqa: PLC0415
    from envoi.web.app import create_app  # noqa: PLC0415
    from envoi.web.observability import configure_logging  # noqa: PLC0415

    settings = _settings()
    configure_logging()
    settings.resolved_secret_key()
    upgrade(settings.database_url)
    logging.getLogger("envoi").info(
        "serving",
        extra={
            "http": settings.http_listen,
            "smtp": settings.smtp_listen,
            "submission": settings.submission_listen or None,
            "database": _redacted(settings.database_url),
        },
    )
    engine = make_engine(settings.database_url)
    # Started first: a port already taken fails `envoi serve` before HTTP answers.
    listener = FeedbackListener(settings, make_sessionmaker(engine))
    try:
        # Off unless ENVOI_SUBMISSION_LISTEN is set; a set-up that would take secrets in
        # clear over the network is refused (docs/smtp-submission.md).
        listeners = [listener] + (
            [SubmissionListener(settings, make_sessionmaker(engine))]
            if settings.submission_listen
            else []
        )
    except (ValueError, OSError) as exc:  # OSError: the certificate or key cannot be read
        engine.dispose()
        raise fail(str(exc)) from None
    try:
        with ExitStack() as running:
            for started in listeners:
                running.enter_context(started)
            uvicorn.run(
                create_app(settings, engine, registries=[s.metrics.registry for s in listeners]),
                host=settings.http_host,
                port=settings.http_port,
                log_config=None,
                access_log=False,
            )
    finally:
        engine.dispose()


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply Alembic migrations up to REVISION (default: the newest)."""
    from envoi.db.session import upgrade  # noqa: PLC0415

    settings = _settings()
    upgrade(settings.database_url, revision)
    typer.echo(f"database at {revision}")


@project_app.command("create")
def project_create(
    name: str,
    login: Annotated[
        str | None, typer.Option(help="Basic-auth login (generated if absent)")
    ] = None,
    secret: Annotated[
        str | None, typer.Option(help="Basic-auth secret (generated if absent)")
    ] = None,
    allow_ip: Annotated[
        list[str] | None, typer.Option("--allow-ip", help="Allowed client CIDR (repeatable)")
    ] = None,
) -> None:
    """Create a project and print its credentials as JSON (the secrets are shown only once)."""
    from envoi.db.session import make_engine, make_sessionmaker, transaction, upgrade  # noqa: PLC0415
    from envoi.projects import services as projects  # noqa: PLC0415

    settings = _settings()
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            creds = projects.create_project(session, name, login, secret, allow_ip or [])
    except EnvoiError as exc:
        raise fail(exc.message) from None
    finally:
        engine.dispose()
    _print(creds.__dict__)


@project_app.command("list")
def project_list() -> None:
    """List projects as JSON (without secrets)."""
    from envoi.db.session import make_engine, make_sessionmaker, transaction, upgrade  # noqa: PLC0415
    from envoi.projects import services as projects  # noqa: PLC0415

    settings = _settings()
    upgrade(settings.database_url)
    engine = make_engine(settings.database_url)
    with transaction(make_sessionmaker(engine)) as session:
        rows = [
            {"id": p.id, "name": p.name, "login": p.login, "allowed_ips": p.allowed_ips}
            for p in projects.list_projects(session)
        ]
    engine.dispose()
    _print(rows)


@project_app.command("allow-ip")
def project_allow_ip(
    project_id: int,
    cidr: Annotated[list[str] | None, typer.Argument(help="CIDRs; none clears the list")] = None,
) -> None:
    """Replace a project's allowlist of client addresses (empty: any address)."""
    from envoi.db.session import make_engine, make_sessionmaker, transaction  # noqa: PLC0415
    from envoi.projects import services as projects  # noqa: PLC0415

    settings = _settings()
    engine = make_engine(settings.database_url)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            allowed = projects.set_allowed_ips(session, project_id, cidr or [])
    except EnvoiError as exc:
        raise fail(exc.message) from None
    finally:
        engine.dispose()
    _print({"id": project_id, "allowed_ips": allowed})


@project_app.command("bounce-domain")
def project_bounce_domain(
    project_id: int,
    domain: Annotated[
        str | None, typer.Argument(help="Domain; none falls back to ENVOI_BOUNCE_DOMAIN")
    ] = None,
) -> None:
    """Set the domain of a project's VERP return paths (its MX must reach envoi's SMTP)."""
    from envoi.db.session import make_engine, make_sessionmaker, transaction  # noqa: PLC0415
    from envoi.projects import services as projects  # noqa: PLC0415

    settings = _settings()
    engine = make_engine(settings.database_url)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            chosen = projects.set_bounce_domain(session, project_id, domain)
    except EnvoiError as exc:
        raise fail(exc.message) from None
    finally:
        engine.dispose()
    _print({"id": project_id, "bounce_domain": chosen or settings.bounce_domain})


@project_app.command("rotate-secret")
def project_rotate_secret(
    project_id: int,
    secret: Annotated[str | None, typer.Option(help="New secret (generated if absent)")] = None,
) -> None:
    """Replace a project's Basic-auth secret and print the new one."""
    from envoi.db.session import make_engine, make_sessionmaker, transaction  # noqa: PLC0415
    from envoi.projects import services as projects  # noqa: PLC0415

    settings = _settings()
    engine = make_engine(settings.database_url)
    try:
        with transaction(make_sessionmaker(engine)) as session:
            new_secret = projects.rotate_secret(session, project_id, secret)
    except EnvoiError as exc:
        raise fail(exc.message) from None
    finally:
        engine.dispose()
    _print({"id": project_id, "secret": new_secret})

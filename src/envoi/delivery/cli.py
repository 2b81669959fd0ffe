"""`envoi worker` and `envoi dkim ...`: delivery from the command line.

Commands import what they need when they run (see `envoi.cli`): every `envoi` command
imports this module.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated

import typer

from envoi.commands import command_session
from envoi.core.errors import Invalid

if TYPE_CHECKING:
    from envoi.config import Settings
    from envoi.delivery.models import DkimKey

# --- envoi dkim ------------------------------------------------------------------

dkim_app = typer.Typer(help="DKIM keys of a project's sending domains.")


def _dkim_print(data: object) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


@dkim_app.command("generate")
def dkim_generate(
    domain: Annotated[str, typer.Argument(help="The sending (From:) domain to sign for")],
    project: Annotated[int, typer.Option("--project", help="Project id")],
    selector: Annotated[
        str | None, typer.Option(help="DKIM selector (default: envoiYYYYMM)")
    ] = None,
    algorithm: Annotated[str, typer.Option(help="rsa (2048 bits) or ed25519")] = "rsa",
) -> None:
    """Generate a key pair for DOMAIN, store it inactive, and print the DNS TXT record
    to publish; once it resolves, `envoi dkim activate ID` makes the key sign."""
    from envoi.delivery import services  # noqa: PLC0415 - see the module docstring

    with command_session() as session:
        chosen = selector or services.default_selector()
        key, txt = services.create_dkim_key(session, project, domain, chosen, algorithm)
        row = _describe(key, txt)
    _dkim_print(row)


@dkim_app.command("activate")
def dkim_activate(
    key_id: Annotated[int, typer.Argument(metavar="ID", help="The key's id")],
    force: Annotated[
        bool, typer.Option("--force", help="Activate even if DNS does not publish the key")
    ] = False,
) -> None:
    """Make key ID sign its domain's mail, once DNS publishes its TXT record (checked
    now; the domain's other keys stop signing)."""
    from envoi.delivery import services  # noqa: PLC0415 - see the module docstring

    lookup = None if force else services.lookup_txt
    with command_session() as session:
        try:
            key = services.activate_dkim_key(session, key_id, lookup=lookup)
        except Invalid as exc:
            hint = "publish the record (envoi dkim list) and try again, or use --force"
            raise Invalid(f"{exc.message}: not activated; {hint}", exc.loc) from None
        row = _describe(key, services.txt_value(key))
    _dkim_print(row)


@dkim_app.command("deactivate")
def dkim_deactivate(
    key_id: Annotated[int, typer.Argument(metavar="ID", help="The key's id")],
) -> None:
    """Stop key ID signing (the domain's mail goes unsigned unless another key of it
    is active)."""
    from envoi.delivery import services  # noqa: PLC0415 - see the module docstring

    with command_session() as session:
        key = services.deactivate_dkim_key(session, key_id)
        row = _describe(key, services.txt_value(key))
    _dkim_print(row)


@dkim_app.command("list")
def dkim_list(
    project: Annotated[int | None, typer.Option("--project", help="Only this project")] = None,
) -> None:
    """List DKIM keys with their DNS records (never the private keys)."""
    from envoi.delivery import services  # noqa: PLC0415 - see the module docstring

    with command_session() as session:
        rows = [
            {**_describe(key, services.txt_value(key)), "created_at": key.created_at}
            for key in services.list_dkim_keys(session, project)
        ]
    _dkim_print(rows)


def _describe(key: DkimKey, txt: str) -> dict[str, object]:
    from envoi.delivery import services  # noqa: PLC0415 - see the module docstring
    from envoi.delivery.dkim import zone_line  # noqa: PLC0415

    return {
        "id": key.id,
        "project_id": key.project_id,
        "domain": key.domain,
        "selector": key.selector,
        "algorithm": key.algorithm,
        "active": key.active,
        "name": services.record_name(key),
        "type": "TXT",
        "value": txt,
        "zone": zone_line(key.domain, key.selector, txt),
    }


# --- envoi worker (below this line: the worker helper's part) ---------------------


def worker_command(
    connections: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=1000,
            help="SMTP sessions at once, and rows in flight (default ENVOI_WORKER_CONNECTIONS)",
        ),
    ] = None,
    owner: Annotated[
        str | None,
        typer.Option(help="Name on this worker's leases (default: host:pid:random)"),
    ] = None,
    once: Annotated[
        bool, typer.Option(help="Exit once nothing is left to send now (tests, benchmarks)")
    ] = False,
    metrics_listen: Annotated[
        str | None,
        typer.Option(help="HOST:PORT to serve this worker's Prometheus metrics on"),
    ] = None,
    scheduler: Annotated[
        bool,
        typer.Option(
            "--scheduler",
            help="Also run the scheduler (planned starts, automated campaigns' runs); a "
            "database lease keeps one scheduler active among all processes",
        ),
    ] = False,
) -> None:
    """Deliver started campaigns: spool, render, sign and send, until SIGTERM or SIGINT
    (graceful: the messages in flight are finished and recorded)."""
    # Imported here: other commands should not pay for the worker's imports.
    from envoi.config import Settings  # noqa: PLC0415
    from envoi.delivery.console import run_worker  # noqa: PLC0415

    if owner is not None and not 1 <= len(owner) <= 64:
        typer.echo("error: --owner must be 1 to 64 characters", err=True)
        raise typer.Exit(code=2)
    settings = Settings()
    with contextlib.ExitStack() as stack:
        if scheduler:
            stack.enter_context(_scheduler(settings))
        run_worker(
            settings, connections=connections, owner=owner, once=once, metrics_listen=metrics_listen
        )


@contextlib.contextmanager
def _scheduler(settings: Settings) -> Iterator[None]:
    """The scheduler on a thread beside the worker, from a migrated database."""
    from envoi.campaigns.scheduler import background_scheduler  # noqa: PLC0415
    from envoi.db.session import upgrade  # noqa: PLC0415
    from envoi.web.observability import configure_logging  # noqa: PLC0415

    upgrade(settings.database_url)
    configure_logging()  # its first lines come before the worker's configuration
    with background_scheduler(settings):
        yield

"""`envoi router ...` and `envoi captured`: the operator's side of routers and captured mail.

The operator manages every router here, shared ones included (the API shows those to
projects but never lets them change one): `add`, `set` (change part of a router),
`remove` and `list`. Passwords are never taken on the command line, where `ps` and
the shell's history would show them: `--password-file FILE`, or `-` for standard input.

Commands import what they need when they run (see `envoi.cli`): every `envoi` command
imports this module.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime
from email.utils import format_datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from envoi.commands import command_session, fail

if TYPE_CHECKING:
    from envoi.routers.models import CapturedMessage, Router

router_app = typer.Typer(help="Routers: the routes mail leaves by (smtp relay, mx, capture).")

# Options `add` and `set` share: the common settings, and any other as JSON.
Host = Annotated[str | None, typer.Option(help="smtp: the relay's host")]
Port = Annotated[int | None, typer.Option(help="smtp / mx: the server port")]
Tls = Annotated[str | None, typer.Option(help="smtp: none, starttls or implicit")]
Username = Annotated[str | None, typer.Option(help="smtp: AUTH login")]
PasswordFile = Annotated[
    str | None, typer.Option(help="smtp: a file holding the AUTH password ('-': standard input)")
]
MaxConnections = Annotated[int | None, typer.Option(help="smtp: sessions at once")]
PerConnection = Annotated[int | None, typer.Option(help="Messages before a session is renewed")]
PerSecond = Annotated[float | None, typer.Option(help="smtp: the router's rate limit (0: none)")]
ConfigJson = Annotated[
    str | None,
    typer.Option(
        "--config", help='Other settings as a JSON object, e.g. \'{"ca_file": "/etc/ca.pem"}\''
    ),
]


def _shown(router: Router) -> dict[str, Any]:
    from envoi.routers.schemas import shown_config  # noqa: PLC0415 - see the module docstring

    return {
        "id": router.id,
        "project_id": router.project_id,
        "name": router.name,
        "kind": router.kind,
        "config": shown_config(router.config or {}),
        "is_default": router.is_default,
        "shared": router.project_id is None,
    }


def _settings_given(
    config_json: str | None, password_file: str | None, **flags: Any
) -> dict[str, Any]:
    """The settings a command was given: `--config` JSON, then the flags, then the password."""
    given: dict[str, Any] = {}
    if config_json is not None:
        try:
            given = json.loads(config_json)
        except ValueError as exc:
            raise fail(f"--config is not JSON: {exc}") from None
        if not isinstance(given, dict):
            raise fail("--config must be a JSON object")
    given |= {key: value for key, value in flags.items() if value is not None}
    if password_file is not None:
        given["password"] = _read_password(password_file)
    return given


def _read_password(path: str) -> str:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise fail(f"cannot read the password: {exc.strerror or exc}") from None
    password = text.rstrip("\r\n")
    if not password:
        raise fail("the password file is empty")
    return password


@router_app.command("add")
def router_add(
    name: str,
    *,
    kind: Annotated[str, typer.Option(help="smtp (a relay), mx (direct) or capture")],
    project: Annotated[int | None, typer.Option(help="Project the router belongs to")] = None,
    shared: Annotated[bool, typer.Option(help="A router every project may use")] = False,
    host: Host = None,
    port: Port = None,
    tls: Tls = None,
    username: Username = None,
    password_file: PasswordFile = None,
    max_connections: MaxConnections = None,
    messages_per_connection: PerConnection = None,
    messages_per_second: PerSecond = None,
    config: ConfigJson = None,
    allow_private_network: Annotated[
        bool, typer.Option(help="The router may connect to private addresses")
    ] = False,
    default: Annotated[bool, typer.Option(help="The project's default router")] = False,
) -> None:
    """Define a router of a project (--project ID) or a shared one (--shared); print it."""
    from envoi.projects.models import Project  # noqa: PLC0415
    from envoi.routers import services  # noqa: PLC0415 - see the module docstring

    if (project is None) == (not shared):
        raise fail("give exactly one of --project ID and --shared")
    settings = _settings_given(
        config,
        password_file,
        host=host,
        port=port,
        tls=tls,
        username=username,
        max_connections=max_connections,
        messages_per_connection=messages_per_connection,
        messages_per_second=messages_per_second,
        allow_private_network=allow_private_network or None,
    )
    with command_session() as session:
        if project is not None and session.get(Project, project) is None:
            raise fail(f"project {project} not found")
        router = services.create_router(
            session,
            project,
            name=name,
            kind=kind,
            config=settings,
            is_default=default,
            operator=True,
        )
        shown = _shown(router)
    typer.echo(json.dumps(shown, indent=2))


@router_app.command("set")
def router_set(
    router_id: Annotated[int, typer.Argument(help="The router's id (envoi router list)")],
    *,
    name: Annotated[str | None, typer.Option(help="A new name")] = None,
    host: Host = None,
    port: Port = None,
    tls: Tls = None,
    username: Username = None,
    password_file: PasswordFile = None,
    clear_password: Annotated[bool, typer.Option(help="smtp: remove the password")] = False,
    max_connections: MaxConnections = None,
    messages_per_connection: PerConnection = None,
    messages_per_second: PerSecond = None,
    config: ConfigJson = None,
    allow_private_network: Annotated[
        bool | None,
        typer.Option(
            "--allow-private-network/--no-allow-private-network",
            help="Whether the router may connect to private addresses",
        ),
    ] = None,
    default: Annotated[
        bool | None, typer.Option("--default/--no-default", help="The project's default router")
    ] = None,
) -> None:
    """Change part of any router, shared ones included; print it. The settings given
    replace the stored ones (null in --config removes one); the others, the password
    too, stay."""
    from envoi.routers import services  # noqa: PLC0415 - see the module docstring

    changes = _settings_given(
        config,
        password_file,
        host=host,
        port=port,
        tls=tls,
        username=username,
        max_connections=max_connections,
        messages_per_connection=messages_per_connection,
        messages_per_second=messages_per_second,
    )
    if clear_password:
        changes["password"] = None
    if allow_private_network is not None:
        changes["allow_private_network"] = allow_private_network or None
    with command_session() as session:
        router = services.operator_update(
            session, router_id, name=name, changes=changes, is_default=default
        )
        shown = _shown(router)
    typer.echo(json.dumps(shown, indent=2))


@router_app.command("remove")
def router_remove(
    router_id: Annotated[int, typer.Argument(help="The router's id (envoi router list)")],
) -> None:
    """Delete any router, shared ones included, and every routing rule that uses it."""
    from envoi.routers import services  # noqa: PLC0415 - see the module docstring

    with command_session() as session:
        services.operator_remove(session, router_id)
    typer.echo(json.dumps({"removed": router_id}))


@router_app.command("list")
def router_list(
    project: Annotated[
        int | None, typer.Option(help="Only this project's and the shared routers")
    ] = None,
) -> None:
    """List routers as JSON (passwords hidden): all of them, or those a project sees."""
    from sqlalchemy import select  # noqa: PLC0415 - see the module docstring

    from envoi.routers import services  # noqa: PLC0415
    from envoi.routers.models import Router  # noqa: PLC0415

    with command_session() as session:
        if project is None:
            rows = [_shown(r) for r in session.scalars(select(Router).order_by(Router.id))]
        else:
            rows = [_shown(r) for r in services.list_routers(session, project)]
    typer.echo(json.dumps(rows, indent=2))


def _summary(message: CapturedMessage) -> dict[str, Any]:
    from envoi.routers.capture import subject_of  # noqa: PLC0415 - see the module docstring

    return {
        "id": message.id,
        "project_id": message.project_id,
        "post": message.post,
        "mail_from": message.mail_from,
        "recipient": message.recipient,
        "received_at": message.received_at.isoformat(),
        "subject": subject_of(message.raw),
    }


def _mbox_entry(message: CapturedMessage) -> str:
    """One message in mbox form, so `--raw > file.mbox` opens in a mail client."""
    received: datetime = message.received_at
    text = message.raw.decode("utf-8", "replace").replace("\r\n", "\n")
    body = "\n".join(
        ">" + line if line.lstrip(">").startswith("From ") else line for line in text.split("\n")
    )
    stamp = format_datetime(received.replace(tzinfo=None)).rsplit(" ", 1)[0]
    return f"From {message.mail_from or 'MAILER-DAEMON'} {stamp}\n{body.rstrip()}\n"


def captured_command(
    project: Annotated[int | None, typer.Option(help="Only this project's mail")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="Newest N messages")] = 20,
    raw: Annotated[bool, typer.Option(help="Print the messages themselves (mbox)")] = False,
) -> None:
    """Mail the capture router kept: one JSON line per message, newest first (or --raw)."""
    from envoi.routers import services  # noqa: PLC0415 - see the module docstring

    with command_session() as session:
        messages = services.list_captured(session, project, limit=limit)
        lines = [_mbox_entry(m) if raw else json.dumps(_summary(m)) for m in messages]
    for line in lines:
        typer.echo(line)

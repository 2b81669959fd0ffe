"""`envoi bounce classify FILE...`: the inbound parser and classifier on saved messages.

Operators run it on a bounce, a complaint or an auto-reply saved as .eml to see what
the SMTP listener makes of it: one JSON object per line for each recipient found.
The command imports the parser when it runs (see `envoi.cli`): every `envoi` command
imports this module.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from envoi.inbound.reports import Report

bounce_app = typer.Typer(help="Bounces, complaints and auto-replies received over SMTP.")


@bounce_app.callback()
def bounce() -> None:
    """Bounces, complaints and auto-replies received over SMTP."""
    # A callback keeps `bounce` a group of commands when it has only one.


@bounce_app.command("classify")
def classify_command(
    files: Annotated[
        list[Path],
        typer.Argument(help="Saved messages (.eml); - reads one from standard input"),
    ],
) -> None:
    """Print what each saved message reports, one JSON line per recipient.

    The fields: file, kind, recipient, reason, class, error_code, hard, smtp_code,
    status, diagnostic, reporting_mta, feedback_type, send_tokens. A file that cannot
    be read is named on standard error, and the exit code is 1 once the others are done.
    """
    from envoi.inbound.parsing import parse  # noqa: PLC0415 - see the module docstring

    unreadable = False
    for path in files:
        try:
            raw = typer.get_binary_stream("stdin").read() if str(path) == "-" else path.read_bytes()
        except OSError as exc:
            typer.echo(f"error: {path}: {exc.strerror or exc}", err=True)
            unreadable = True
            continue
        for report in parse(raw):
            typer.echo(json.dumps(row(str(path), report), ensure_ascii=False))
    if unreadable:
        raise typer.Exit(code=1)


def row(file: str, report: Report) -> dict[str, object]:
    """One printed line: the issue's fields first, then the listener's clues."""
    return {
        "file": file,
        "kind": report.kind,
        "recipient": report.recipient,
        "reason": report.reason,
        "class": report.bounce_class,
        "error_code": report.error_code,
        "hard": report.hard,
        "smtp_code": report.smtp_code,
        "status": report.status,
        "diagnostic": report.diagnostic,
        "reporting_mta": report.reporting_mta,
        "feedback_type": report.feedback_type,
        "send_tokens": list(report.send_tokens),
    }

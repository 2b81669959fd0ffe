"""`envoi worker` and `envoi dkim ...`: delivery from the command line."""

from __future__ import annotations

import typer

dkim_app = typer.Typer(help="DKIM keys of a project's sending domains.")

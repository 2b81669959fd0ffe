"""`envoi router ...` and `envoi captured`: routers and captured mail from the command line."""

from __future__ import annotations

import typer

router_app = typer.Typer(help="Routers: the routes mail leaves by (smtp relay, mx, capture).")

"""Email templates are Jinja2, rendered in a sandbox; their syntax is checked when they
are written, so a broken template is refused at once instead of failing a campaign.
"""

from __future__ import annotations

from jinja2 import TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment


def make_environment() -> SandboxedEnvironment:
    """The sandbox templates are parsed in (no attribute access to Python internals)."""
    return SandboxedEnvironment()


def syntax_error(source: str, environment: SandboxedEnvironment | None = None) -> str | None:
    """None when `source` parses; else the problem and its line, for the user."""
    try:
        (environment or make_environment()).parse(source)
    except TemplateSyntaxError as exc:
        return f"template syntax error at line {exc.lineno}: {exc.message or 'invalid syntax'}"
    return None
